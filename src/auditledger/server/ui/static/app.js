// auditledger UI: the little behaviour the server cannot render.
// Dates in the viewer's time zone, the count and timeline loaded after the rows,
// the tenant switcher, confirmations, and "/" to focus the filter.
(function () {
  "use strict";

  var exact = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });

  function localize(root) {
    var nodes = root.querySelectorAll("time[data-local]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var when = new Date(node.getAttribute("datetime"));
      if (isNaN(when.getTime())) { continue; }
      var text = exact.format(when);
      node.title = text + " (" + node.getAttribute("datetime") + ")";
      if (node.hasAttribute("data-exact")) { node.textContent = text; }
    }
  }

  // Parts that may take a scan (the count, the timeline) arrive after the rows.
  function loadFragments() {
    var boxes = document.querySelectorAll("[data-src]");
    Array.prototype.forEach.call(boxes, function (box) {
      fetch(box.getAttribute("data-src"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (html) {
          // The fragment is rendered and escaped by the server, like every page.
          box.innerHTML = html;
          localize(box);
        })
        .catch(function () { box.textContent = "Could not be loaded; reload the page."; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    loadFragments();
    var select = document.querySelector("select[data-nav-tenant]");
    if (select) {
      select.addEventListener("change", function () {
        window.location.assign("/ui/t/" + encodeURIComponent(select.value));
      });
    }
    var forms = document.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (ev) {
        if (!window.confirm(this.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    }
    document.addEventListener("keydown", function (ev) {
      var q = document.getElementById("q");
      var typing = /^(INPUT|TEXTAREA|SELECT)$/.test((ev.target && ev.target.tagName) || "");
      if (ev.key === "/" && q && !typing) { ev.preventDefault(); q.focus(); q.select(); }
    });
  });
})();
