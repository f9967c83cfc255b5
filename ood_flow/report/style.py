"""The report's stylesheet (inline in the page): system fonts only, readable on a laptop and on paper."""

CSS = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5b6570; --rule: #d9dee3; --band: #f4f6f8;
        --in: #1f77b4; --bad: #b42318; --good: #067647; --warn-bg: #fff6e5; --warn: #8a4b00; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45; font-size: 15px;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width: 1180px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 1.55rem; margin: 0 0 4px; line-height: 1.25; }
h2 { font-size: 1.2rem; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1rem; margin: 20px 0 6px; }
p { margin: 6px 0; }
a { color: #175cd3; text-decoration: none; }
a:hover { text-decoration: underline; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
              font-size: 0.86em; }
.sub { color: var(--muted); margin: 0 0 14px; }
.note { color: var(--muted); font-size: 0.9rem; }
.convention { background: var(--band); border-left: 4px solid var(--in); padding: 8px 12px; margin: 12px 0;
              font-size: 0.93rem; }
.warning { background: var(--warn-bg); color: var(--warn); border: 1px solid #f5c26b; border-radius: 4px;
           padding: 8px 12px; margin: 10px 0; font-size: 0.93rem; }
.top { display: grid; grid-template-columns: minmax(0, 3fr) minmax(220px, 1fr); gap: 28px; align-items: start; }
dl.facts { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 3px 14px; margin: 8px 0;
           font-size: 0.9rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav.toc { background: var(--band); border-radius: 6px; padding: 10px 16px; font-size: 0.9rem; }
nav.toc h2 { margin: 0 0 4px; border: 0; font-size: 0.95rem; }
nav.toc ol { margin: 0; padding-left: 18px; }
nav.toc ol ol { padding-left: 16px; }
ul.summary { padding-left: 20px; margin: 8px 0; }
ul.summary li { margin: 3px 0; }
table { border-collapse: collapse; width: 100%; font-size: 0.88rem; margin: 8px 0; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { display: block; color: var(--muted); font-size: 0.8rem; }
.wrap { overflow-x: auto; }
.bar { position: relative; display: inline-block; width: 84px; height: 10px; margin-top: 3px;
       background: linear-gradient(90deg, #fdecea 0 50%, #e7f4ec 50% 100%); border-radius: 2px; }
.bar .mid { position: absolute; left: 50%; top: -2px; bottom: -2px; border-left: 1px solid #98a2b3; }
.bar .span { position: absolute; top: 2px; height: 6px; background: #98a2b3; border-radius: 2px; }
.bar .dot { position: absolute; top: 0; width: 3px; height: 10px; margin-left: -1px; background: var(--ink); }
.low { color: var(--bad); font-weight: 600; }
.high { color: var(--good); font-weight: 600; }
.figs { display: grid; grid-template-columns: minmax(0, 1.65fr) minmax(0, 1fr) minmax(0, 1fr); gap: 14px;
        align-items: start; }
figure { margin: 0; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.82rem; color: var(--muted); margin-top: 2px; }
.strip { margin: 10px 0 18px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 6px; }
.thumb { width: 76px; text-align: center; }
.thumb img { width: 72px; height: 72px; object-fit: contain; image-rendering: pixelated; background: #000;
             border: 1px solid var(--rule); display: block; margin: 0 auto; }
.thumb .score { font-size: 0.74rem; font-variant-numeric: tabular-nums; display: block; }
.thumb .id { font-size: 0.68rem; color: var(--muted); display: block; overflow: hidden; text-overflow: ellipsis;
             white-space: nowrap; }
.missing { color: var(--muted); font-style: italic; }
.pass { color: var(--good); font-weight: 600; }
.fail { color: var(--bad); font-weight: 600; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.8rem; border-top: 1px solid var(--rule);
         padding-top: 8px; }
@media (max-width: 900px) {
  .page { padding: 18px 16px 32px; }
  .top { grid-template-columns: minmax(0, 1fr); }
  .figs { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
  .figs figure.wide { grid-column: 1 / -1; }
}
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { font-size: 10pt; }
  .page { max-width: none; padding: 0; }
  a { color: inherit; }
  .top { grid-template-columns: minmax(0, 3fr) minmax(0, 1.2fr); }
  .figs { grid-template-columns: minmax(0, 1.65fr) minmax(0, 1fr) minmax(0, 1fr); }
  h2 { break-after: avoid; page-break-after: avoid; }
  figure, tr, .strip, .convention, .warning, nav.toc { break-inside: avoid; page-break-inside: avoid; }
  .wrap { overflow: visible; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""
