#!/usr/bin/env bash
# Opens a report in headless Chromium (Debian's `chromium` package; not
# installed by scripts/setup): takes a screenshot of the whole page and
# checks that the browser drew, with a non-empty size, as many charts and
# tables as the report declares in its <meta> tags.
#
#   scripts/check_report.sh results/reports/<run>/index.html
#
# Prints the counts and the screenshot's path; exit 1 when a chart or table
# was not drawn, 2 when Chromium or the page is missing.
set -euo pipefail
page=${1:?usage: scripts/check_report.sh results/reports/RUN/index.html}
[[ -f $page ]] || { echo "check_report: no such file: $page" >&2; exit 2; }
chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $chromium ]]; then
  echo "check_report: chromium is not installed (apt-get install chromium)" >&2
  exit 2
fi
url="file://$(readlink -f "$page")"
shot="$(dirname "$(readlink -f "$page")")/screenshot.png"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars
       --virtual-time-budget=20000)
dom=$("$chromium" "${flags[@]}" --window-size=1400,1000 --dump-dom "$url" 2>/dev/null)
"$chromium" "${flags[@]}" --window-size=1400,16000 --screenshot="$shot" "$url" \
  >/dev/null 2>&1
declared() { sed -n "s/.*name=\"mpbench-$1\" content=\"\([0-9]*\)\".*/\1/p" "$page" | head -1; }
drawn() { sed -n "s/.*data-rendered-$1=\"\([0-9]*\)\".*/\1/p" <<<"$dom" | head -1; }
status=0
for what in charts tables; do
  d=$(declared "$what"); r=$(drawn "$what")
  echo "check_report: $what declared ${d:-?}, drawn by Chromium ${r:-none}"
  [[ -n $d && "$d" == "$r" ]] || status=1
done
if [[ -s $shot ]]; then echo "check_report: screenshot $shot"; else status=1; fi
exit $status
