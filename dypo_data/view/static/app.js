// Typeset the math in problems and gold answers (elements with class "math") with the shipped KaTeX.
// Completions are never passed to KaTeX: they are shown as the text the model wrote.
document.addEventListener("DOMContentLoaded", function () {
  if (typeof renderMathInElement !== "function") return;
  document.querySelectorAll(".math").forEach(function (el) {
    renderMathInElement(el, {
      delimiters: [
        {left: "$$", right: "$$", display: true}, {left: "\\[", right: "\\]", display: true},
        {left: "$", right: "$", display: false}, {left: "\\(", right: "\\)", display: false},
      ],
      throwOnError: false,
      trust: false,
    });
  });
  document.body.dataset.mathRendered = "1";
});
