// Minimal dependency-free SVG charts for reports: a line chart (loss curves) and a bar chart with
// error whiskers and optional dotted reference lines (the paper's figure style).

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function lineChartSvg(opts: { title: string; xLabel: string; yLabel: string; series: { name: string; points: [number, number][] }[] }): string {
  // Taller when the stacked legend (14 px a series, top right) needs the room.
  const W = 640, H = Math.max(360, 110 + 14 * opts.series.length), L = 60, R = 20, T = 40, B = 50;
  const all = opts.series.flatMap((s) => s.points);
  const xMax = Math.max(1, ...all.map((p) => p[0]));
  const xMin = Math.min(0, ...all.map((p) => p[0]));
  const yMax = niceMax(Math.max(0, ...all.map((p) => p[1]).filter(Number.isFinite)));
  const x = (v: number) => L + ((v - xMin) / (xMax - xMin || 1)) * (W - L - R);
  const y = (v: number) => H - B - (v / yMax) * (H - T - B);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd'];
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  parts.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    parts.push(`<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${+v.toPrecision(3)}</text><line x1="${L}" y1="${y(v)}" x2="${W - R}" y2="${y(v)}" stroke="#eee"/>`);
  }
  parts.push(`<text x="${L}" y="${H - B + 16}" text-anchor="middle">${+xMin.toPrecision(3)}</text><text x="${W - R}" y="${H - B + 16}" text-anchor="middle">${+xMax.toPrecision(3)}</text>`);
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push(`<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(opts.yLabel)}</text>`);
  opts.series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1])).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${colors[i % colors.length]}" stroke-width="1.5" points="${pts}"/>`);
    // A series of one point (one optimizer step) draws no line: mark the point.
    const finite = s.points.filter((p) => Number.isFinite(p[1]));
    if (finite.length === 1) parts.push(`<circle cx="${x(finite[0][0]).toFixed(1)}" cy="${y(finite[0][1]).toFixed(1)}" r="3" fill="${colors[i % colors.length]}"/>`);
    parts.push(`<text x="${W - R - 4}" y="${T + 14 * (i + 1)}" text-anchor="end" fill="${colors[i % colors.length]}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export interface Bar {
  label: string;
  value: number;
  /** Whisker bounds (e.g. a 95% interval). */
  lo?: number;
  hi?: number;
  color?: string;
}

export function barChartSvg(opts: { title: string; yLabel: string; bars: Bar[]; refLines?: { label: string; value: number }[]; yMax?: number }): string {
  const W = Math.max(480, 90 * opts.bars.length + 100), H = 380, L = 60, R = 20, T = 40, B = 80;
  const yMax = opts.yMax ?? niceMax(Math.max(...opts.bars.map((b) => b.hi ?? b.value), ...(opts.refLines ?? []).map((r) => r.value)));
  const y = (v: number) => H - B - (Math.max(0, Math.min(v, yMax)) / yMax) * (H - T - B);
  const slot = (W - L - R) / opts.bars.length;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    parts.push(`<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${+v.toPrecision(3)}</text><line x1="${L}" y1="${y(v)}" x2="${W - R}" y2="${y(v)}" stroke="#eee"/>`);
  }
  parts.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  parts.push(`<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(opts.yLabel)}</text>`);
  opts.bars.forEach((b, i) => {
    const cx = L + slot * (i + 0.5);
    const bw = slot * 0.6;
    parts.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${y(b.value).toFixed(1)}" width="${bw.toFixed(1)}" height="${(H - B - y(b.value)).toFixed(1)}" fill="${b.color ?? '#4c78a8'}"/>`);
    if (b.lo !== undefined && b.hi !== undefined && Number.isFinite(b.lo) && Number.isFinite(b.hi)) {
      parts.push(`<line x1="${cx}" y1="${y(b.lo)}" x2="${cx}" y2="${y(b.hi)}" stroke="black"/>`);
      parts.push(`<line x1="${cx - 6}" y1="${y(b.lo)}" x2="${cx + 6}" y2="${y(b.lo)}" stroke="black"/><line x1="${cx - 6}" y1="${y(b.hi)}" x2="${cx + 6}" y2="${y(b.hi)}" stroke="black"/>`);
    }
    parts.push(`<text x="${cx}" y="${y(b.value) - 6}" text-anchor="middle">${+b.value.toPrecision(3)}</text>`);
    parts.push(`<text x="${cx}" y="${H - B + 16}" text-anchor="middle">${esc(b.label)}</text>`);
  });
  for (const r of opts.refLines ?? []) {
    parts.push(`<line x1="${L}" y1="${y(r.value)}" x2="${W - R}" y2="${y(r.value)}" stroke="#555" stroke-dasharray="4 4"/>`);
    parts.push(`<text x="${W - R - 4}" y="${y(r.value) - 4}" text-anchor="end" fill="#555">${esc(r.label)}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/**
 * Width of a text in px, on the safe side for sans-serif fonts (average advance ≈ 0.55 em; 0.62 em
 * covers wide capitals and digits), so layouts that reserve this much never overlap when rendered.
 */
export function textWidth(s: string, fontSize: number): number {
  let w = 0;
  for (const ch of s) w += /[MWmw@%]/.test(ch) ? 0.9 : /[A-Z0-9]/.test(ch) ? 0.68 : /[ilj.,;:!|' ]/.test(ch) ? 0.34 : 0.6;
  return w * fontSize;
}

export interface GroupedBars {
  /** Label lines under the group (each a separate text line). */
  label: string[];
  bars: Bar[];
  /** Drawn above the group's last bar (e.g. "*" for significant). */
  marker?: string;
}

/**
 * Bars in groups with whiskers (the paper's figure style: per arm base, control and treatment), a
 * legend row under the title, multi-line group labels under the axis. Group widths are sized from
 * the label widths so no two texts overlap.
 */
export function groupedBarChartSvg(opts: { title: string; yLabel: string; groups: GroupedBars[]; legend: { label: string; color: string }[]; yMax?: number; note?: string }): string {
  const FS = 12;
  const barW = 18;
  const gap = 24;
  const L = 70, R = 20;
  const groupW = opts.groups.map((g) => Math.max(g.bars.length * barW + 12, ...g.label.map((l) => textWidth(l, FS) + 8)));
  const plotW = groupW.reduce((a, b) => a + b, 0) + gap * (opts.groups.length + 1);
  const legendW = opts.legend.reduce((a, l) => a + 18 + textWidth(l.label, FS) + 16, 0);
  const W = Math.ceil(Math.max(L + plotW + R, L + legendW + R, textWidth(opts.title, 14) + 40, 360));
  const labelLines = Math.max(1, ...opts.groups.map((g) => g.label.length));
  const T = 64;
  const plotH = 240;
  const B = 16 + labelLines * 15 + (opts.note ? 22 : 0);
  const H = T + plotH + B;
  const hi = Math.max(...opts.groups.flatMap((g) => g.bars.map((b) => (Number.isFinite(b.hi ?? NaN) ? b.hi! : b.value))).filter(Number.isFinite), 0);
  const yMax = opts.yMax ?? niceMax(hi * 1.08);
  const y = (v: number) => T + plotH - (Math.max(0, Math.min(v, yMax)) / yMax) * plotH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="${FS}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  let lx = L;
  for (const l of opts.legend) {
    parts.push(`<rect x="${lx}" y="32" width="12" height="12" fill="${l.color}"/><text x="${lx + 16}" y="42">${esc(l.label)}</text>`);
    lx += 18 + textWidth(l.label, FS) + 16;
  }
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    parts.push(`<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${esc(fmtTick(v))}</text><line x1="${L}" y1="${y(v)}" x2="${W - R}" y2="${y(v)}" stroke="#eee"/>`);
  }
  parts.push(`<line x1="${L}" y1="${T + plotH}" x2="${W - R}" y2="${T + plotH}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${T + plotH}" stroke="black"/>`);
  parts.push(`<text x="14" y="${T + plotH / 2}" text-anchor="middle" transform="rotate(-90 14 ${T + plotH / 2})">${esc(opts.yLabel)}</text>`);
  let gx = L + gap;
  opts.groups.forEach((g, gi) => {
    const cx = gx + groupW[gi] / 2;
    const x0 = cx - (g.bars.length * barW) / 2;
    g.bars.forEach((b, bi) => {
      const bx = x0 + bi * barW;
      const v = Number.isFinite(b.value) ? b.value : 0;
      parts.push(`<rect class="bar" data-group="${gi}" data-label="${esc(b.label)}" x="${(bx + 1).toFixed(1)}" y="${y(v).toFixed(1)}" width="${barW - 2}" height="${(T + plotH - y(v)).toFixed(1)}" fill="${b.color ?? '#4c78a8'}"><title>${esc(`${b.label}: ${fmtTick(v)}`)}</title></rect>`);
      if (b.lo !== undefined && b.hi !== undefined && Number.isFinite(b.lo) && Number.isFinite(b.hi)) {
        const mx = bx + barW / 2;
        parts.push(`<line x1="${mx}" y1="${y(b.lo)}" x2="${mx}" y2="${y(b.hi)}" stroke="black"/><line x1="${mx - 4}" y1="${y(b.lo)}" x2="${mx + 4}" y2="${y(b.lo)}" stroke="black"/><line x1="${mx - 4}" y1="${y(b.hi)}" x2="${mx + 4}" y2="${y(b.hi)}" stroke="black"/>`);
      }
    });
    if (g.marker) {
      const last = g.bars[g.bars.length - 1];
      const top = Math.max(last.value, Number.isFinite(last.hi ?? NaN) ? last.hi! : last.value);
      parts.push(`<text x="${x0 + (g.bars.length - 0.5) * barW}" y="${Math.max(T + 10, y(top) - 4)}" text-anchor="middle" font-size="14">${esc(g.marker)}</text>`);
    }
    g.label.forEach((line, li) => parts.push(`<text x="${cx}" y="${T + plotH + 16 + li * 15}" text-anchor="middle">${esc(line)}</text>`));
    gx += groupW[gi] + gap;
  });
  if (opts.note) parts.push(`<text x="${L}" y="${H - 8}" fill="#555">${esc(opts.note)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** Dot-and-whisker rows (e.g. paired differences with intervals) around a zero line, labels on the left. */
export function intervalChartSvg(opts: { title: string; xLabel: string; rows: { label: string; value: number; lo: number; hi: number; marker?: string; color?: string }[] }): string {
  const FS = 12;
  const rowH = 22;
  const labelW = Math.max(80, ...opts.rows.map((r) => textWidth(r.label, FS))) + 16;
  const plotW = 420;
  const R = 40;
  const T = 40;
  const W = Math.ceil(Math.max(labelW + plotW + R, textWidth(opts.title, 14) + 40));
  const H = T + rowH * opts.rows.length + 56;
  const ext = Math.max(1e-12, ...opts.rows.flatMap((r) => [Math.abs(r.lo), Math.abs(r.hi), Math.abs(r.value)]).filter(Number.isFinite));
  const xMax = niceMax(ext * 1.1);
  const x = (v: number) => labelW + ((Math.max(-xMax, Math.min(xMax, v)) + xMax) / (2 * xMax)) * plotW;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="${FS}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  const yEnd = T + rowH * opts.rows.length;
  parts.push(`<line x1="${x(0)}" y1="${T - 4}" x2="${x(0)}" y2="${yEnd}" stroke="#555" stroke-dasharray="4 4"/>`);
  parts.push(`<line x1="${labelW}" y1="${yEnd}" x2="${labelW + plotW}" y2="${yEnd}" stroke="black"/>`);
  for (const v of [-xMax, -xMax / 2, 0, xMax / 2, xMax]) parts.push(`<text x="${x(v)}" y="${yEnd + 16}" text-anchor="middle">${esc(fmtTick(v))}</text>`);
  parts.push(`<text x="${labelW + plotW / 2}" y="${yEnd + 40}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  opts.rows.forEach((r, i) => {
    const cy = T + rowH * i + rowH / 2;
    parts.push(`<text x="${labelW - 10}" y="${cy + 4}" text-anchor="end">${esc(r.label)}</text>`);
    if (Number.isFinite(r.lo) && Number.isFinite(r.hi)) parts.push(`<line x1="${x(r.lo)}" y1="${cy}" x2="${x(r.hi)}" y2="${cy}" stroke="black"/>`);
    if (Number.isFinite(r.value)) parts.push(`<circle class="dot" cx="${x(r.value)}" cy="${cy}" r="4" fill="${r.color ?? '#4c78a8'}"/>`);
    if (r.marker) parts.push(`<text x="${labelW + plotW + 8}" y="${cy + 5}" font-size="14">${esc(r.marker)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 0.01 ? `${+(v * 100).toPrecision(3)}%` : `${+(v * 100).toPrecision(2)}%`;
}

/**
 * Small multiples: one panel per series pair (a solid line and a dashed reference line, e.g. a cell
 * and its control) over integer x (epochs), each panel with its own y range, ticks at every x.
 */
export function smallMultiplesSvg(opts: { title: string; legend: [string, string]; xLabel: string; panels: { title: string; solid: [number, number][]; dashed: [number, number][] }[]; format?: (v: number) => string }): string {
  const FS = 11;
  const cols = Math.min(3, Math.max(1, opts.panels.length));
  const rows = Math.ceil(opts.panels.length / cols);
  const titleW = Math.max(...opts.panels.map((p) => textWidth(p.title, FS)));
  const pw = Math.max(240, Math.ceil(titleW) + 16);
  const ph = 170;
  const padL = 58, padT = 26, padB = 34, padR = 12;
  const W = Math.ceil(Math.max(cols * (pw + padL + padR) + 20, textWidth(opts.title, 14) + 40));
  const top = 60;
  const H = top + rows * (ph + padT + padB) + 10;
  const fmt = opts.format ?? ((v: number) => `${+v.toPrecision(3)}`);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="${FS}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  parts.push(`<line x1="20" y1="38" x2="44" y2="38" stroke="#f58518" stroke-width="2"/><text x="50" y="42">${esc(opts.legend[0])}</text>`);
  const lx = 50 + textWidth(opts.legend[0], FS) + 24;
  parts.push(`<line x1="${lx}" y1="38" x2="${lx + 24}" y2="38" stroke="#555" stroke-width="2" stroke-dasharray="4 3"/><text x="${lx + 30}" y="42">${esc(opts.legend[1])}</text>`);
  opts.panels.forEach((p, i) => {
    const ox = 10 + (i % cols) * (pw + padL + padR) + padL;
    const oy = top + Math.floor(i / cols) * (ph + padT + padB) + padT;
    const pts = [...p.solid, ...p.dashed].filter((q) => Number.isFinite(q[1]));
    const xs = pts.map((q) => q[0]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    let y0 = Math.min(...pts.map((q) => q[1])), y1 = Math.max(...pts.map((q) => q[1]));
    const pad = (y1 - y0) * 0.1 || Math.abs(y1) * 0.05 || 1;
    y0 -= pad;
    y1 += pad;
    const X = (v: number) => ox + ((v - x0) / (x1 - x0 || 1)) * pw;
    const Y = (v: number) => oy + ph - ((v - y0) / (y1 - y0)) * ph;
    parts.push(`<text x="${ox + pw / 2}" y="${oy - 8}" text-anchor="middle">${esc(p.title)}</text>`);
    parts.push(`<rect x="${ox}" y="${oy}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
    for (let k = 0; k <= 2; k++) {
      const v = y0 + ((y1 - y0) * k) / 2;
      parts.push(`<text x="${ox - 4}" y="${Y(v) + 4}" text-anchor="end">${esc(fmt(v))}</text>`);
    }
    for (let x = Math.ceil(x0); x <= x1; x++) parts.push(`<text x="${X(x)}" y="${oy + ph + 14}" text-anchor="middle">${x}</text>`);
    parts.push(`<text x="${ox + pw / 2}" y="${oy + ph + 28}" text-anchor="middle" fill="#555">${esc(opts.xLabel)}</text>`);
    const line = (q: [number, number][]) => q.filter((z) => Number.isFinite(z[1])).map((z) => `${X(z[0]).toFixed(1)},${Y(z[1]).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="#555" stroke-width="1.5" stroke-dasharray="4 3" points="${line(p.dashed)}"/>`);
    parts.push(`<polyline fill="none" stroke="#f58518" stroke-width="2" points="${line(p.solid)}"/>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export interface HeatmapPanel {
  title: string;
  rows: string[];
  cols: string[];
  /** values[r][c]: the colour (NaN = no data, grey). */
  values: number[][];
  /** texts[r][c]: the cell's label lines (e.g. the value and a significance mark). */
  texts: string[][][];
}

/**
 * Heatmaps on a diverging scale symmetric around 0 (blue below, orange above), one panel under the
 * other, each with a title, row labels on the left, column labels above, and label lines inside the
 * cells. Widths come from the label widths, so no two texts overlap.
 */
export function heatmapSvg(opts: { title: string; rowAxis: string; colAxis: string; panels: HeatmapPanel[]; format: (v: number) => string; note?: string }): string {
  const FS = 12;
  const lineH = 15;
  const pad = 12;
  const maxLines = Math.max(1, ...opts.panels.flatMap((p) => p.texts.flat().map((t) => t.length)));
  const cellH = Math.max(34, maxLines * lineH + 10);
  const labelW = Math.ceil(Math.max(60, textWidth(opts.rowAxis, FS), ...opts.panels.flatMap((p) => p.rows.map((r) => textWidth(r, FS))))) + 16;
  const cellW = Math.ceil(Math.max(64, ...opts.panels.flatMap((p) => [...p.cols.map((c) => textWidth(c, FS)), ...p.texts.flat(2).map((t) => textWidth(t, FS))])) + pad);
  const maxCols = Math.max(1, ...opts.panels.map((p) => p.cols.length));
  const L = 16;
  const ext = Math.max(1e-12, ...opts.panels.flatMap((p) => p.values.flat().filter(Number.isFinite).map(Math.abs)));
  const legendW = 200;
  const note = opts.note ?? '';
  const W = Math.ceil(Math.max(L + labelW + maxCols * cellW + 20, textWidth(opts.title, 14) + 40, L + textWidth(`${opts.colAxis} →`, FS) + labelW + 20, L + legendW + 2 * textWidth(opts.format(-ext), FS) + 60, L + textWidth(note, FS) + 20));
  const color = (v: number): string => {
    if (!Number.isFinite(v)) return '#e6e6e6';
    const t = Math.max(-1, Math.min(1, v / ext));
    // White at 0 → #f58518 (orange) above, #4c78a8 (blue) below, at 75% strength so labels stay readable.
    const [r, g, b] = t >= 0 ? [245, 133, 24] : [76, 120, 168];
    const a = 0.75 * Math.abs(t);
    const mix = (c: number) => Math.round(255 + (c - 255) * a);
    return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
  };
  const parts: string[] = [];
  let y = 20;
  const body: string[] = [];
  body.push(`<text x="${W / 2}" y="${y}" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  // Legend: the scale from −ext to +ext.
  y += 18;
  const lx = L + textWidth(opts.format(-ext), FS) + 8;
  body.push(`<defs><linearGradient id="hm-scale"><stop offset="0" stop-color="${color(-ext)}"/><stop offset="0.5" stop-color="white"/><stop offset="1" stop-color="${color(ext)}"/></linearGradient></defs>`);
  body.push(`<text x="${lx - 6}" y="${y + 10}" text-anchor="end">${esc(opts.format(-ext))}</text><rect x="${lx}" y="${y}" width="${legendW}" height="12" fill="url(#hm-scale)" stroke="#999"/><text x="${lx + legendW + 6}" y="${y + 10}">${esc(opts.format(ext))}</text>`);
  y += 22;
  for (const p of opts.panels) {
    y += 18;
    body.push(`<text x="${L}" y="${y}" font-weight="bold">${esc(p.title)}</text>`);
    y += 18;
    const x0 = L + labelW;
    body.push(`<text x="${L}" y="${y}" fill="#555">${esc(opts.rowAxis)} ↓</text><text x="${x0}" y="${y}" fill="#555">${esc(opts.colAxis)} →</text>`);
    y += 18;
    p.cols.forEach((c, ci) => body.push(`<text x="${x0 + ci * cellW + cellW / 2}" y="${y}" text-anchor="middle">${esc(c)}</text>`));
    y += 8;
    p.rows.forEach((r, ri) => {
      const cy = y + ri * cellH;
      body.push(`<text x="${x0 - 8}" y="${cy + cellH / 2 + 4}" text-anchor="end">${esc(r)}</text>`);
      p.cols.forEach((_, ci) => {
        const v = p.values[ri]?.[ci] ?? NaN;
        const cx = x0 + ci * cellW;
        body.push(`<rect class="heat" data-row="${esc(r)}" data-col="${esc(p.cols[ci])}" x="${cx}" y="${cy}" width="${cellW}" height="${cellH}" fill="${color(v)}" stroke="white"/>`);
        const lines = p.texts[ri]?.[ci] ?? [];
        const top = cy + cellH / 2 - ((lines.length - 1) * lineH) / 2 + 4;
        lines.forEach((t, li) => body.push(`<text x="${cx + cellW / 2}" y="${top + li * lineH}" text-anchor="middle">${esc(t)}</text>`));
      });
    });
    y += p.rows.length * cellH + 6;
  }
  if (note) {
    y += 18;
    body.push(`<text x="${L}" y="${y}" fill="#555">${esc(note)}</text>`);
  }
  const H = y + 12;
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="${FS}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(...body, '</svg>');
  return parts.join('\n') + '\n';
}
