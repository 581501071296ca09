(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  function key(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (!numeric) return raw.toLowerCase();
    var n = parseFloat(raw);
    return isNaN(n) ? -Infinity : n;
  }
  function sortBy(table, th, index) {
    var numeric = th.getAttribute("data-type") === "num";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.tHead.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var grouped = table.classList.contains("grouped");
    var parent = grouped ? table : table.tBodies[0];
    var items = grouped ? Array.prototype.slice.call(table.tBodies)
                        : Array.prototype.slice.call(table.tBodies[0].rows);
    var keyed = items.map(function (item, position) {
      var row = grouped ? item.rows[0] : item;
      return { item: item, key: key(row.cells[index], numeric), position: position };
    });
    keyed.sort(function (a, b) {
      if (a.key < b.key) return ascending ? -1 : 1;
      if (a.key > b.key) return ascending ? 1 : -1;
      return a.position - b.position;
    });
    keyed.forEach(function (entry) { parent.appendChild(entry.item); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, index) {
      th.setAttribute("tabindex", "0");
      th.addEventListener("click", function () { sortBy(table, th, index); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, th, index); }
      });
    });
  });
  document.querySelectorAll("button.toggle").forEach(function (button) {
    button.addEventListener("click", function () {
      var body = button.closest("tbody");
      var open = body.classList.toggle("open");
      button.setAttribute("aria-expanded", open ? "true" : "false");
    });
  });
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("tbody.alert").forEach(function (body) { body.classList.add("open"); });
  });
})();
