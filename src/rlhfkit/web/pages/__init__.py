"""Server-rendered pages (Jinja2, autoescaped): sign-in, rater pages, admin pages."""
