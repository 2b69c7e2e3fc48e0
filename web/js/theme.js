// Applied before the first paint so a dark-theme user never sees a white flash.
(function () {
  var saved = null;
  try { saved = localStorage.getItem('kanade.theme'); } catch (e) { /* storage off */ }
  if (saved === 'light' || saved === 'dark') document.documentElement.dataset.theme = saved;
})();
