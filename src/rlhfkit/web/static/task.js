// The comparison page: time on task and keyboard shortcuts. The form works without it.
(function () {
  "use strict";
  var form = document.getElementById("task-form");
  if (!form) return;
  var started = performance.now();
  var timeField = document.getElementById("time-on-task");
  var sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }  // one click, one judgment
    sent = true;
    timeField.value = String(Math.round(performance.now() - started));
  });
  function press(id) {
    var button = document.getElementById(id);
    if (button) { button.click(); }
  }
  document.addEventListener("keydown", function (event) {
    var tag = (event.target && event.target.tagName) || "";
    if (form.dataset.taskType === "demonstration") {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { press("submit-demo"); }
      return;
    }
    if (tag === "INPUT" && event.target.type !== "checkbox" || tag === "TEXTAREA" || tag === "SELECT") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var key = event.key.toLowerCase();
    if (key === "1") press("choose-left");
    else if (key === "2") press("choose-right");
    else if (key === "t") press("choose-tie");
    else if (key === "b") press("choose-bad");
    else if (key === "s") {
      var s = document.getElementById("strength");
      s.selectedIndex = (s.selectedIndex + 1) % s.options.length;
    } else return;
    event.preventDefault();
  });
})();
