// The suite page's performance profile: one step line per optimizer, rho(tau) over [1, tau_max].
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const traces = data.optimizers.map((o) => ({
    x: o.profile.map((p) => p[0]),
    y: o.profile.map((p) => p[1]),
    name: `${o.label} (${o.score.toFixed(3)})`,
    mode: "lines",
    line: { shape: "hv", dash: o.baseline ? "dot" : "solid" },
  }));
  const chart = document.getElementById("profile-chart");
  Plotly.newPlot(chart, traces, {
    margin: { t: 10, r: 10 },
    xaxis: { title: { text: "τ (time to target / best time)" }, range: [1, data.tau_max] },
    yaxis: { title: { text: "ρ(τ): share of workloads" }, range: [0, 1.02] },
    legend: { orientation: "h", y: -0.25 },
  }, { responsive: true, displaylogo: false }).then(() => {
    chart.dataset.drawn = String(Number(chart.dataset.drawn || 0) + 1);  // what the page tests wait for
  });
})();
