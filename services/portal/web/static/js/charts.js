// Charts from the JSON data blocks next to each <canvas data-chart> (Chart.js, served by stamen).
// Colours come from the theme's CSS variables and are redrawn when the theme switches.
"use strict";
(() => {
  if (!window.Chart) return;
  const drawn = [];
  const css = (name, fallback) =>
    getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  const shortDay = (label) => (/^\d{4}-\d{2}-\d{2}$/.test(label) ? label.slice(5) : label);
  const draw = () => {
    drawn.splice(0).forEach((c) => c.destroy());
    const text = css("--pico-muted-color", "#666");
    const grid = css("--pico-muted-border-color", "#ddd");
    const palette = [css("--st-info", "#1f6feb"), css("--st-ok", "#1a7f37"), css("--st-warn", "#b35900")];
    document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
      const source = document.getElementById(canvas.dataset.source);
      if (!source) return;
      const data = JSON.parse(source.textContent);
      const money = Boolean(data.money);
      drawn.push(new window.Chart(canvas, {
        type: canvas.dataset.chart,
        data: {
          labels: data.labels.map(shortDay),
          datasets: data.series.map((s, i) => ({
            label: s.label, data: s.data, borderColor: palette[i % 3], backgroundColor: palette[i % 3],
            borderWidth: 2, pointRadius: 0, tension: 0.25, maxBarThickness: 28,
          })),
        },
        options: {
          animation: false, responsive: true, maintainAspectRatio: false,
          plugins: {
            legend: { display: data.series.length > 1, labels: { color: text } },
            tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${money ? "$" + c.parsed.y.toFixed(2) : c.parsed.y}` } },
          },
          scales: {
            x: { ticks: { color: text, maxRotation: 0, autoSkipPadding: 12 }, grid: { color: grid } },
            y: { beginAtZero: true, ticks: { color: text, precision: money ? undefined : 0 }, grid: { color: grid } },
          },
        },
      }));
    });
  };
  draw();
  document.addEventListener("stamen:theme", draw);
})();
