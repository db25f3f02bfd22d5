// Keyboard shortcuts and the confirmation before a final submit, on the experts' forms (form[data-final]).
// Choice groups are the elements marked data-choice (radio fieldsets, the answer select); each choice carries
// its key in data-key. The highlighted group takes the keys: a choice's key picks it and highlights the next
// group; [ and ] move between groups; Ctrl+Enter (Cmd+Enter) submits. Keys typed into a text field are text.
// Without this script every form still works (the server checks everything); it only adds speed.
(function () {
  "use strict";
  const form = document.querySelector("form[data-final]");
  if (!form) {
    return;
  }
  const groups = Array.from(form.querySelectorAll("[data-choice]"));
  let current = 0;

  function highlight(i, scroll) {
    current = Math.max(0, Math.min(i, groups.length - 1));
    groups.forEach(function (g, j) { g.classList.toggle("current", j === current); });
    if (scroll && groups[current]) {  // only for keys: scrolling under a mouse click would move its target
      groups[current].scrollIntoView({block: "nearest"});
    }
  }

  function choose(group, key) {
    if (group.tagName === "SELECT") {
      const option = Array.from(group.options).find(function (o) { return o.dataset.key === key; });
      if (!option) {
        return false;
      }
      group.value = option.value;
    } else {
      const input = Array.from(group.querySelectorAll("input[data-key]")).find(function (x) {
        return x.dataset.key === key;
      });
      if (!input) {
        return false;
      }
      input.checked = true;
    }
    group.dispatchEvent(new Event("change", {bubbles: true}));
    return true;
  }

  function typing(el) {
    return el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox");
  }

  document.addEventListener("keydown", function (ev) {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
      ev.preventDefault();
      form.requestSubmit();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target) || groups.length === 0) {
      return;
    }
    if (ev.key === "]" || ev.key === "[") {
      ev.preventDefault();
      highlight(current + (ev.key === "]" ? 1 : -1), true);
      return;
    }
    if (ev.key.length === 1 && choose(groups[current], ev.key.toLowerCase())) {
      ev.preventDefault();
      highlight(current + 1, true);
    }
  });

  form.addEventListener("focusin", function (ev) {
    const group = ev.target.closest("[data-choice]");
    if (group) {
      highlight(groups.indexOf(group), false);
    }
  });

  form.addEventListener("submit", function (ev) {
    if (!window.confirm(form.dataset.final)) {
      ev.preventDefault();
    }
  });

  highlight(0, false);
})();
