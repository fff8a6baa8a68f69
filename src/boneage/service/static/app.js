// The clinician's page: one or several films in; for each, the estimate, the film at its own
// shape with its heatmap, the bone age chart and a PDF report. Plain JavaScript, no external
// libraries, works offline. Nothing typed here is stored beyond this tab.
"use strict";
const $ = (id) => document.getElementById(id);
const KEY = "boneage-api-key"; // sessionStorage only: gone when the tab closes
let health = {};
let reference = null; // {male: [[ca, mean, sd]...], female: [...]}
let files = [];       // File objects chosen
let dicom = [];       // whether each looks like DICOM
let rows = [];        // per film: {file, res} or {file, error}
let selected = -1;

function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }
function fmt(v, d = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }
function ym(months) {
  const t = Math.round(months), y = Math.floor(t / 12);
  return `${y} y ${t - 12 * y} m`;
}
function sexChoice() { const r = document.querySelector("input[name=sex]:checked"); return r ? r.value : null; }

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

// Estimate is enabled once there is a film and a sex; the hint says what is missing.
function updateReady() {
  const allDicom = files.length > 0 && dicom.every(Boolean);
  const dicomRadio = document.querySelector("input[name=sex][value='']");
  dicomRadio.disabled = !allDicom;
  $("dicom-sex-label").classList.toggle("muted", !allDicom);
  if (!allDicom && dicomRadio.checked) dicomRadio.checked = false;
  const sex = sexChoice();
  const missing = [];
  if (!files.length) missing.push("a film");
  if (sex === null) missing.push("the child's sex");
  $("hint").textContent = missing.length ? `Choose ${missing.join(" and ")}.` : "";
  $("estimate").disabled = missing.length > 0;
  $("age-note").hidden = files.length < 2;
}

async function looksDicom(f) {
  if (/\.(dcm|dicom)$/i.test(f.name)) return true;
  const head = new Uint8Array(await f.slice(128, 132).arrayBuffer());
  return String.fromCharCode(...head) === "DICM";
}

async function setFiles(list) {
  files = Array.from(list);
  dicom = await Promise.all(files.map(looksDicom));
  $("drop-text").textContent = files.length === 0 ? "Choose or drop one or more films (PNG, JPEG or DICOM)"
    : files.length === 1 ? files[0].name : `${files.length} films: ${files.map(f => f.name).join(", ")}`;
  updateReady();
}

function headers() {
  const key = sessionStorage.getItem(KEY) || "";
  return key ? { "X-API-Key": key } : {};
}

function formData(file, withHeatmap) {
  const fd = new FormData();
  fd.append("file", file);
  const sex = sexChoice();
  if (sex) fd.append("sex", sex);
  const age = ageMonths();
  if (age !== "") fd.append("chronological_age_months", age);
  for (const [id, field] of [["height", "height_cm"], ["weight", "weight_kg"], ["mother-height", "mother_height_cm"], ["father-height", "father_height_cm"]]) {
    if ($(id).value !== "") fd.append(field, $(id).value);
  }
  if (withHeatmap) fd.append("heatmap", "true");
  return fd;
}

async function call(path, fd) {
  const r = await fetch(path, { method: "POST", body: fd, headers: headers() });
  if (!r.ok) {
    let msg = `The server answered ${r.status}.`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    if (r.status === 401) { $("key-row").hidden = false; msg = "Enter the API key this server asks for (" + msg + ")."; }
    throw new Error(msg);
  }
  return r;
}

function renderBatch() {
  const tb = $("batch").querySelector("tbody");
  tb.innerHTML = "";
  rows.forEach((row, i) => {
    const tr = document.createElement("tr");
    const cells = row.res ? [row.file.name, row.res.sex, `${ym(row.res.bone_age_months)} (${fmt(row.res.bone_age_months)} mo)`,
      row.res.interval_low_months === null ? "–" : `${fmt(row.res.interval_low_months, 0)}–${fmt(row.res.interval_high_months, 0)} mo`,
      row.res.chronological_age_months === null ? "–" : ym(row.res.chronological_age_months),
      row.res.difference_months === null ? "–" : `${row.res.difference_months > 0 ? "+" : ""}${fmt(row.res.difference_months)} mo`,
      fmt(row.res.sds, 2), row.res.category || "–", row.res.warnings.join("; ")]
      : [row.file.name, "", "", "", "", "", "", "", `error: ${row.error}`];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    if (i === selected) tr.classList.add("sel");
    tr.addEventListener("click", () => { if (row.res) { selected = i; renderBatch(); render(row.res, row.file.name); } });
    tb.appendChild(tr);
  });
  $("batch-box").hidden = rows.length < 2;
  renderFollowup();
}

// Several films of one child (the identifier field set, each film with its study date: a
// DICOM's StudyDate): the visits in date order and the bone age gained per year of age.
function seriesRows() {
  if (!$("identifier").value.trim()) return [];
  const vs = rows.filter(r => r.res && r.res.study_date && r.res.chronological_age_months !== null).map(r => r.res);
  vs.sort((a, b) => a.study_date.localeCompare(b.study_date));
  return vs.length >= 2 ? vs : [];
}

function renderFollowup() {
  const vs = seriesRows();
  $("followup-box").hidden = vs.length === 0;
  const tb = $("followup").querySelector("tbody");
  tb.innerHTML = "";
  $("followup-id").textContent = $("identifier").value.trim();
  vs.forEach((v, i) => {
    let since = "–";
    if (i > 0) {
      const p = vs[i - 1], years = (v.chronological_age_months - p.chronological_age_months) / 12;
      if (years > 0) since = `${fmt((v.bone_age_months - p.bone_age_months) / 12 / years, 2)} y of bone age per year (${fmt(years, 1)} y)`;
    }
    const tr = document.createElement("tr");
    for (const c of [v.study_date, ym(v.chronological_age_months), `${ym(v.bone_age_months)} (${fmt(v.bone_age_months)} mo)`, since]) {
      const td = document.createElement("td"); td.textContent = c; tr.appendChild(td);
    }
    tb.appendChild(tr);
  });
  const shown = current();
  if (shown && reference) drawChart(shown);  // the chart joins the visits as they arrive
}

// The table as the CLI's CSV (`boneage predict --format csv`): the same columns (a test holds
// them to RESULT_COLUMNS), plus the error of a film that failed. Text cells that a spreadsheet would run as a formula are
// quoted with a leading apostrophe (a file may be named "=HYPERLINK(...)").
const CSV_COLUMNS = ["file", "sex", "bone_age_months", "bone_age_years", "interval_low_months",
  "interval_high_months", "chronological_age_months", "difference_months", "sds", "category",
  "height_cm", "height_sds", "target_height_cm", "target_height_low_cm", "target_height_high_cm",
  "weight_kg", "predicted_adult_height_cm", "predicted_adult_height_low_cm",
  "predicted_adult_height_high_cm", "rwt_adult_height_cm", "rwt_adult_height_low_cm",
  "rwt_adult_height_high_cm", "growth_reference", "notes", "warnings"];
function csvCell(v, text) {
  let s = v === null || v === undefined ? "" : String(v);
  if (text && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
function batchCsv() {
  const lines = [CSV_COLUMNS.concat(["error"]).join(",")];
  for (const row of rows) {
    const r = row.res || {};
    const cells = CSV_COLUMNS.map(k => k === "file" ? csvCell(row.file.name, true)
      : k === "warnings" || k === "notes" ? csvCell((r[k] || []).join("; "), true)
      : csvCell(r[k], k === "sex" || k === "category"));
    lines.push(cells.concat([csvCell(row.error || "", true)]).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

async function ensureReference() {
  if (reference) return;
  try {
    const r = await fetch("/v1/reference", { headers: headers() });
    if (r.ok) reference = await r.json();
  } catch (e) { /* the chart then shows the patient without the reference band */ }
}

async function render(res, name) {
  await ensureReference();
  $("result").hidden = false;
  $("which").textContent = name;
  $("ba-ym").textContent = ym(res.bone_age_months);
  $("ba-months").textContent = fmt(res.bone_age_months);
  $("interval-row").hidden = res.interval_low_months === null;
  if (res.interval_low_months !== null)
    $("interval").textContent = `${fmt(res.interval_low_months, 0)}–${fmt(res.interval_high_months, 0)} months`;
  const known = res.chronological_age_months !== null;
  $("compare-row").hidden = !known;
  $("no-age").hidden = known;
  if (known) {
    $("ca").textContent = `${ym(res.chronological_age_months)} (${fmt(res.chronological_age_months)} months)`;
    $("diff").textContent = `${res.difference_months > 0 ? "+" : ""}${fmt(res.difference_months)} months`;
    $("sds-part").hidden = res.sds === null;
    $("sds").textContent = fmt(res.sds, 2);
    $("category").textContent = res.category || "";
  }
  const parts = [];
  if (res.height_cm !== null && res.height_cm !== undefined)
    parts.push(`Height ${fmt(res.height_cm)} cm` + (res.height_sds !== null ? ` (SDS ${res.height_sds > 0 ? "+" : ""}${fmt(res.height_sds, 2)})` : ""));
  if (res.target_height_cm !== null && res.target_height_cm !== undefined)
    parts.push(`target height ${fmt(res.target_height_cm)} cm (${fmt(res.target_height_low_cm)}–${fmt(res.target_height_high_cm)})`);
  if (res.predicted_adult_height_cm !== null && res.predicted_adult_height_cm !== undefined)
    parts.push(`adult height ${fmt(res.predicted_adult_height_cm)} cm (90%: ${fmt(res.predicted_adult_height_low_cm)}–${fmt(res.predicted_adult_height_high_cm)}, Bayley-Pinneau)`);
  if (res.rwt_adult_height_cm !== null && res.rwt_adult_height_cm !== undefined)
    parts.push(`${fmt(res.rwt_adult_height_cm)} cm (90%: ${fmt(res.rwt_adult_height_low_cm)}–${fmt(res.rwt_adult_height_high_cm)}, Roche-Wainer-Thissen)`);
  $("growth-row").hidden = parts.length === 0;
  $("growth-row").textContent = parts.length ? parts.join("; ") + ` — ${res.growth_reference}` : "";
  const n = $("notes"); n.innerHTML = "";
  for (const text of res.notes || []) { const li = document.createElement("li"); li.textContent = text; n.appendChild(li); }
  const w = $("warnings"); w.innerHTML = "";
  for (const text of res.warnings) { const li = document.createElement("li"); li.textContent = text; w.appendChild(li); }
  $("heatmap-toggle").hidden = !res.heatmap;
  showImage();
  drawChart(res);
}

function current() { return selected >= 0 && rows[selected] ? rows[selected].res : null; }

function showImage() {
  const res = current();
  if (!res) return;
  $("film-img").src = $("show-heatmap").checked && res.heatmap ? res.heatmap : res.film;
  $("heat-scale").hidden = !($("show-heatmap").checked && res.heatmap);
}

function drawChart(res) {
  if (res.chronological_age_months === null) { $("chart").innerHTML = ""; return; }
  const male = res.sex === "M";
  const rows = reference ? reference[male ? "male" : "female"] : [];
  const W = 440, H = 350, L = 44, B = 36, T = 14, R = 12;
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
  const colour = male ? "#3b6fb6" : "#c8507a";
  const cx = x(res.chronological_age_months);
  if (res.interval_low_months !== null) s += `<line x1="${cx}" x2="${cx}" y1="${y(res.interval_low_months)}" y2="${y(res.interval_high_months)}" stroke="${colour}" stroke-width="2"/>`;
  s += `<circle id="patient-point" cx="${cx}" cy="${y(res.bone_age_months)}" r="5" fill="${colour}"/>`;
  const vs = seriesRows();
  if (vs.length) {  // the child's visits, joined in date order
    s += `<polyline id="visits-line" points="${vs.map(v => `${x(v.chronological_age_months)},${y(v.bone_age_months)}`).join(" ")}" fill="none" stroke="${colour}" stroke-width="1.5"/>`;
    for (const v of vs) s += `<circle class="visit-point" cx="${x(v.chronological_age_months)}" cy="${y(v.bone_age_months)}" r="4" fill="#fff" stroke="${colour}" stroke-width="2"/><text x="${x(v.chronological_age_months) + 6}" y="${y(v.bone_age_months) + 12}" font-size="9">${v.study_date}</text>`;
  }
  // legend: which reference, which sex
  const who = male ? "boys" : "girls";
  const lx = L + 10, ly = T + 8;
  s += `<g class="legend"><rect x="${lx - 6}" y="${ly - 10}" width="238" height="62" fill="#fff" stroke="#ccc"/>`;
  s += `<rect x="${lx}" y="${ly - 6}" width="14" height="8" fill="#9ecae1" opacity="0.8"/><text x="${lx + 20}" y="${ly + 1}">±2 SD, Greulich &amp; Pyle / Brush (${who})</text>`;
  s += `<line x1="${lx}" x2="${lx + 14}" y1="${ly + 12}" y2="${ly + 12}" stroke="#08519c" stroke-width="1.5"/><text x="${lx + 20}" y="${ly + 15}">Brush Foundation mean (${who})</text>`;
  s += `<line x1="${lx}" x2="${lx + 14}" y1="${ly + 26}" y2="${ly + 26}" stroke="#000" stroke-dasharray="4 3"/><text x="${lx + 20}" y="${ly + 29}">bone age = chronological age</text>`;
  s += `<circle cx="${lx + 7}" cy="${ly + 40}" r="4" fill="${colour}"/><text x="${lx + 20}" y="${ly + 43}">this film, with its 90% interval</text></g>`;
  s += `<text x="${(W + L) / 2}" y="${H - 4}" text-anchor="middle">chronological age (years)</text>`;
  s += `<text transform="translate(12 ${H / 2}) rotate(-90)" text-anchor="middle">bone age (years)</text></svg>`;
  $("chart").innerHTML = s;
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  if ($("estimate").disabled) return;
  try { ageMonths(); } catch (e) { showError(e.message); return; }
  const btn = $("estimate");
  btn.disabled = true;
  rows = []; selected = -1;
  $("result").hidden = true; $("batch-box").hidden = true;
  try {
    for (let i = 0; i < files.length; i++) {
      btn.textContent = files.length > 1 ? `Estimating ${i + 1}/${files.length}…` : "Estimating…";
      try {
        const res = await (await call("/v1/predict", formData(files[i], health.heatmaps))).json();
        rows.push({ file: files[i], res });
        if (selected < 0) { selected = i; render(res, files[i].name); }
      } catch (e) {
        rows.push({ file: files[i], error: e.message });
        if (files.length === 1) showError(e.message);
      }
      renderBatch();
    }
    if (files.length > 1 && selected < 0) showError("No film could be estimated: see the table.");
  } finally {
    btn.textContent = "Estimate";
    updateReady();
  }
});

$("report").addEventListener("click", async () => {
  showError("");
  const row = rows[selected];
  if (!row) return;
  try {
    const fd = formData(row.file, false);
    const ident = $("identifier").value.trim();
    if (ident) fd.append("identifier", files.length > 1 ? `${ident} ${row.file.name}` : ident);
    if ($("study").value) fd.append("study_date", $("study").value);
    const r = await call("/v1/report", fd);
    const m = /filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob()); a.download = m ? m[1] : "bone-age-report.pdf"; a.click();
  } catch (e) { showError(e.message); }
});

$("csv").addEventListener("click", () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([batchCsv()], { type: "text/csv" }));
  a.download = "bone-age-results.csv"; a.click();
});

$("show-heatmap").addEventListener("change", showImage);
for (const r of document.querySelectorAll("input[name=sex]")) r.addEventListener("change", updateReady);
$("api-key").addEventListener("input", () => sessionStorage.setItem(KEY, $("api-key").value));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) { $("file").files = e.dataTransfer.files; setFiles(e.dataTransfer.files); }
});
$("file").addEventListener("change", () => setFiles($("file").files));

$("api-key").value = sessionStorage.getItem(KEY) || "";
fetch("/health").then(r => r.json()).then(j => {
  health = j;
  $("model-name").textContent = `Model: ${j.model}.`;
  $("key-row").hidden = !j.api_key_required;
}).catch(() => {});
updateReady();
