// The clinician's page: upload a film, get the estimate, the heatmap and a growth chart.
// Plain JavaScript, no external libraries, works offline.
"use strict";
const $ = (id) => document.getElementById(id);
let last = null;      // the last successful result
let reference = null; // {male: [[ca, mean, sd]...], female: [...]}

function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }

function ageMonths() {
  const m = $("age").value.trim();
  if (m !== "") return m;
  const b = $("birth").value, s = $("study").value;
  if (b && s) {
    const days = (new Date(s) - new Date(b)) / 86400000;
    if (days < 0) throw new Error("The study date is before the birth date.");
    return (days / (365.25 / 12)).toFixed(1);
  }
  return "";
}

function formData(withHeatmap) {
  const f = $("file").files[0];
  if (!f) throw new Error("Choose a film first.");
  const fd = new FormData();
  fd.append("file", f);
  const sex = document.querySelector("input[name=sex]:checked").value;
  if (sex) fd.append("sex", sex);
  const age = ageMonths();
  if (age !== "") fd.append("chronological_age_months", age);
  if (withHeatmap) fd.append("heatmap", "true");
  return fd;
}

async function call(path, fd) {
  const r = await fetch(path, { method: "POST", body: fd });
  if (!r.ok) {
    let msg = `The server answered ${r.status}.`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function fmt(v, d = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }

function render(res) {
  $("result").hidden = false;
  $("ba-months").textContent = fmt(res.bone_age_months);
  $("ba-years").textContent = fmt(res.bone_age_years, 2);
  $("interval").textContent = res.interval_low_months === null ? "not available"
    : `${fmt(res.interval_low_months, 0)}–${fmt(res.interval_high_months, 0)} months`;
  const known = res.chronological_age_months !== null;
  $("compare-row").hidden = !known;
  if (known) {
    $("ca").textContent = `${fmt(res.chronological_age_months)} months`;
    $("diff").textContent = `${res.difference_months > 0 ? "+" : ""}${fmt(res.difference_months)} months`;
    $("sds").textContent = fmt(res.sds, 2);
    $("category").textContent = res.category;
  }
  const w = $("warnings"); w.innerHTML = "";
  for (const text of res.warnings) { const li = document.createElement("li"); li.textContent = text; w.appendChild(li); }
  showImage();
  drawChart(res);
}

function showImage() {
  if (!last) return;
  $("film-img").src = $("show-heatmap").checked && last.heatmap ? last.heatmap : last.film;
}

function drawChart(res) {
  const rows = reference ? reference[res.sex === "M" ? "male" : "female"] : [];
  const W = 440, H = 340, L = 44, B = 36, T = 14, R = 12;
  const x = (m) => L + (m / 12) / 19 * (W - L - R);
  const y = (m) => H - B - (m / 12) / 20 * (H - B - T);
  let s = `<svg viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg" font-size="10">`;
  for (let yr = 0; yr <= 20; yr += 2) s += `<line x1="${L}" x2="${W - R}" y1="${y(yr * 12)}" y2="${y(yr * 12)}" stroke="#eee"/><text x="${L - 6}" y="${y(yr * 12) + 3}" text-anchor="end">${yr}</text>`;
  for (let yr = 0; yr <= 18; yr += 2) s += `<text x="${x(yr * 12)}" y="${H - B + 14}" text-anchor="middle">${yr}</text>`;
  if (rows.length) {
    const up = rows.map(r => `${x(r[0])},${y(r[0] + 2 * r[2])}`), down = rows.slice().reverse().map(r => `${x(r[0])},${y(Math.max(0, r[0] - 2 * r[2]))}`);
    s += `<polygon class="band" points="${up.concat(down).join(" ")}" fill="#9ecae1" opacity="0.55"/>`;
    s += `<polyline points="${rows.map(r => `${x(r[0])},${y(r[1])}`).join(" ")}" fill="none" stroke="#08519c" stroke-width="1.5"/>`;
  }
  s += `<line x1="${x(0)}" y1="${y(0)}" x2="${x(228)}" y2="${y(228)}" stroke="#000" stroke-dasharray="4 3"/>`;
  const colour = res.sex === "M" ? "#3b6fb6" : "#c8507a";
  if (res.chronological_age_months !== null) {
    const cx = x(res.chronological_age_months);
    if (res.interval_low_months !== null) s += `<line x1="${cx}" x2="${cx}" y1="${y(res.interval_low_months)}" y2="${y(res.interval_high_months)}" stroke="${colour}" stroke-width="2"/>`;
    s += `<circle id="patient-point" cx="${cx}" cy="${y(res.bone_age_months)}" r="5" fill="${colour}"/>`;
  } else {
    s += `<line id="patient-point" x1="${L}" x2="${W - R}" y1="${y(res.bone_age_months)}" y2="${y(res.bone_age_months)}" stroke="${colour}" stroke-width="2"/>`;
  }
  s += `<text x="${(W + L) / 2}" y="${H - 4}" text-anchor="middle">chronological age (years)</text>`;
  s += `<text transform="translate(12 ${H / 2}) rotate(-90)" text-anchor="middle">bone age (years)</text></svg>`;
  $("chart").innerHTML = s;
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  const btn = $("estimate");
  btn.disabled = true; btn.textContent = "Estimating…";
  try {
    const res = await (await call("/v1/predict", formData(true))).json();
    last = res;
    render(res);
  } catch (e) {
    showError(e.message);
  } finally {
    btn.disabled = false; btn.textContent = "Estimate";
  }
});

$("report").addEventListener("click", async () => {
  showError("");
  try {
    const blob = await (await call("/v1/report", formData(false))).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "bone-age-report.pdf"; a.click();
  } catch (e) { showError(e.message); }
});

$("show-heatmap").addEventListener("change", showImage);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) { $("file").files = e.dataTransfer.files; $("drop-text").textContent = e.dataTransfer.files[0].name; }
});
$("file").addEventListener("change", () => { if ($("file").files[0]) $("drop-text").textContent = $("file").files[0].name; });

fetch("/v1/reference").then(r => r.json()).then(j => { reference = j; }).catch(() => {});
fetch("/health").then(r => r.json()).then(j => { $("model-name").textContent = `Model: ${j.model}.`; }).catch(() => {});
