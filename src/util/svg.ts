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
  const W = 640, H = 360, L = 60, R = 20, T = 40, B = 50;
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
