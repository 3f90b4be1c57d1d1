// Lanewatch web UIs (the fleet console and the agent's local UI): the little the server cannot do.
// No application logic lives here; pages are rendered and updated by the server (htmx +
// server-sent events).
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

  // Calibration (agent UI): an <svg data-edit-polygons="<textarea id>"> over a frame draws the
  // textarea's polygons ("name: x,y x,y x,y" per line) with a handle on every point; dragging a
  // handle rewrites the textarea, and typing in it redraws. The server validates what is sent.
  var SVG = "http://www.w3.org/2000/svg";
  function parse(text) {
    return text.split("\n").filter(function (l) { return l.indexOf(":") > 0; }).map(function (l) {
      var i = l.indexOf(":");
      var points = l.slice(i + 1).trim().split(/\s+/).map(function (p) {
        var xy = p.split(",");
        return [parseFloat(xy[0]), parseFloat(xy[1])];
      }).filter(function (p) { return isFinite(p[0]) && isFinite(p[1]); });
      return { name: l.slice(0, i).trim(), points: points };
    });
  }
  function format(sections) {
    return sections.map(function (s) {
      return s.name + ": " + s.points.map(function (p) { return Math.round(p[0]) + "," + Math.round(p[1]); }).join(" ");
    }).join("\n");
  }
  function editor(svg) {
    var area = document.getElementById(svg.getAttribute("data-edit-polygons"));
    if (!area) return;
    var box = svg.viewBox.baseVal;
    var r = Math.max(box.width, box.height) / 90;
    svg.style.pointerEvents = "auto";
    function draw() {
      var sections = parse(area.value);
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      sections.forEach(function (s, si) {
        var poly = document.createElementNS(SVG, "polygon");
        poly.setAttribute("points", s.points.map(function (p) { return p.join(","); }).join(" "));
        poly.setAttribute("fill", "#79b8ff22");
        poly.setAttribute("stroke", "#79b8ff");
        poly.setAttribute("stroke-width", r / 2);
        poly.setAttribute("data-section", s.name);
        svg.appendChild(poly);
        s.points.forEach(function (p, pi) {
          var h = document.createElementNS(SVG, "circle");
          h.setAttribute("cx", p[0]); h.setAttribute("cy", p[1]); h.setAttribute("r", r);
          h.setAttribute("fill", "#e3b341"); h.setAttribute("data-handle", si + ":" + pi);
          h.style.cursor = "move";
          svg.appendChild(h);
        });
      });
    }
    var dragging = null;
    svg.addEventListener("pointerdown", function (e) {
      var handle = e.target.getAttribute && e.target.getAttribute("data-handle");
      if (!handle) return;
      dragging = handle.split(":").map(Number);
      svg.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    svg.addEventListener("pointermove", function (e) {
      if (!dragging) return;
      var pt = svg.createSVGPoint(); pt.x = e.clientX; pt.y = e.clientY;
      var p = pt.matrixTransform(svg.getScreenCTM().inverse());
      var sections = parse(area.value);
      var s = sections[dragging[0]];
      if (!s || !s.points[dragging[1]]) return;
      s.points[dragging[1]] = [Math.min(Math.max(p.x, 0), box.width), Math.min(Math.max(p.y, 0), box.height)];
      area.value = format(sections);
      draw();
    });
    svg.addEventListener("pointerup", function () { dragging = null; });
    area.addEventListener("input", draw);
    draw();
  }
  function editors(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("svg[data-edit-polygons]").forEach(editor);
  }
  document.addEventListener("DOMContentLoaded", function () { editors(document); });
  document.addEventListener("htmx:afterSwap", function (e) { editors(e.target); });
})();
