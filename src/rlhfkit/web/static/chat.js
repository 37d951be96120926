// The chat page: send a message, show the reply as it streams, rate every reply.
// Model and user text only ever goes into textContent, never into HTML.
(function () {
  "use strict";
  var root = document.getElementById("chat");
  if (!root) return;
  var conversation = root.dataset.conversation;
  var csrf = root.dataset.csrf;
  var messages = document.getElementById("messages");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var send = document.getElementById("send");
  var retry = document.getElementById("retry");
  var errorBox = document.getElementById("chat-error");
  var model = document.getElementById("chat-model").textContent;
  var busy = false;

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin"
    });
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function bubble(role, label, text) {
    var div = document.createElement("div");
    div.className = "msg " + role;
    var span = document.createElement("span");
    span.className = "role";
    span.textContent = label;
    var body = document.createElement("div");
    body.className = "pre" + (role === "assistant" ? " reply" : "");
    body.textContent = text;
    div.appendChild(span);
    div.appendChild(body);
    messages.appendChild(div);
    return div;
  }

  function rateControls(div) {
    var box = document.createElement("div");
    box.className = "rate";
    [["up", "\u25B2 Good", "Good reply"], ["down", "\u25BC Bad", "Bad reply"]].forEach(function (t) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "thumb " + t[0];
      b.dataset.rating = t[0];
      b.setAttribute("aria-pressed", "false");
      b.title = t[2];
      b.textContent = t[1];
      box.appendChild(b);
    });
    var comment = document.createElement("input");
    comment.type = "text";
    comment.className = "comment";
    comment.maxLength = 2000;
    comment.placeholder = "Comment (optional)";
    box.appendChild(comment);
    var saved = document.createElement("span");
    saved.className = "meta saved";
    box.appendChild(saved);
    div.appendChild(box);
  }

  // Read "data: {...}\n\n" events from a streamed response body.
  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        var line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (line.indexOf("data: ") === 0) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }

  async function reply(body, userText) {
    if (busy) return;
    busy = true;
    send.disabled = retry.disabled = true;
    showError("");
    if (userText !== null) bubble("user", "you", userText);
    var div = bubble("assistant", model, "");
    div.classList.add("streaming");
    var text = div.querySelector(".reply");
    try {
      var response = await post("/chat/api/" + conversation + "/messages", body);
      if (!response.ok) {
        var problem = await response.json().catch(function () { return {}; });
        throw new Error(typeof problem.detail === "string" ? problem.detail : "the server said " + response.status);
      }
      await readEvents(response, function (event) {
        if (event.type === "delta") text.textContent += event.text;
        else if (event.type === "done") {
          div.dataset.completion = event.completion_id;
          rateControls(div);
        } else if (event.type === "error") throw new Error(event.message);
      });
      if (!div.dataset.completion) throw new Error("the reply was cut off");
      retry.hidden = false;
    } catch (err) {
      div.remove();
      showError("No reply: " + err.message);
    } finally {
      div.classList.remove("streaming");
      busy = false;
      send.disabled = retry.disabled = false;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var message = input.value;
    if (!message.trim()) return;
    input.value = "";
    reply({ message: message, temperature: number("temperature", 0.7), max_tokens: number("max-tokens", 200) }, message);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  retry.addEventListener("click", function () {
    var replies = messages.querySelectorAll(".msg.assistant");
    if (replies.length) { replies[replies.length - 1].classList.add("earlier"); }
    reply({ retry: true, temperature: number("temperature", 0.7), max_tokens: number("max-tokens", 200) }, null);
  });

  function number(id, fallback) {
    var value = parseFloat(document.getElementById(id).value);
    return isNaN(value) ? fallback : value;
  }

  async function rate(div, rating) {
    var box = div.querySelector(".rate");
    var comment = box.querySelector(".comment").value.trim();
    var saved = box.querySelector(".saved");
    var response = await post("/chat/api/feedback", {
      completion_id: div.dataset.completion, rating: rating, comment: comment || null
    });
    if (!response.ok) { saved.textContent = "not saved (" + response.status + ")"; return; }
    box.querySelectorAll(".thumb").forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.rating === rating ? "true" : "false");
    });
    saved.textContent = "saved";
  }

  // One listener for the replies on the page and those added later.
  messages.addEventListener("click", function (event) {
    var button = event.target.closest(".thumb");
    if (!button) return;
    rate(button.closest(".msg"), button.dataset.rating);
  });
  messages.addEventListener("change", function (event) {
    if (!event.target.classList.contains("comment")) return;
    var div = event.target.closest(".msg");
    var pressed = div.querySelector(".thumb[aria-pressed=true]");
    if (pressed) rate(div, pressed.dataset.rating);  // a comment goes with a rating
  });
})();
