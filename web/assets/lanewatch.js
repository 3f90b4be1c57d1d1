// Lanewatch console: the little the server cannot do. No application logic lives here; pages are
// rendered and updated by the server (htmx + server-sent events).
(function () {
  "use strict";

  // A live region holds still while the operator has selected rows in it (the job list), so a
  // pushed update never drops a selection.
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    var target = e.target;
    if (target && target.hasAttribute && target.hasAttribute("data-hold-while-selected") &&
        target.querySelector("input[type=checkbox]:checked")) {
      e.preventDefault();
    }
  });

  // Violation review: `c` confirms, `r` goes to the reason (Enter then rejects).
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    if (e.key === "c") {
      var confirm = document.getElementById("confirm");
      if (confirm) { e.preventDefault(); confirm.click(); }
    } else if (e.key === "r") {
      var reason = document.getElementById("reason");
      if (reason) { e.preventDefault(); reason.focus(); }
    }
  });

  // After a decision the next item arrives: put the keyboard on it.
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.target && e.target.id === "review-current") {
      var next = document.getElementById("confirm");
      if (next) next.focus();
    }
  });
})();
