// MathJax 3 configuration for pymdownx.arithmatex (generic mode): typeset only the spans and
// blocks it marks. MathJax itself is served from this site (assets/mathjax/), not from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
    enableMenu: false  // the menu would fetch accessibility extensions from a CDN on demand
  },
  svg: { fontCache: "global" }
};
