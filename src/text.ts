/** Plain-text output helpers shared by the command line and the fleet view. */

/** "1 rule", "2 rules"; `many` where adding an s is wrong ("1 policy", "2 policies"). */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Characters as shown, not UTF-16 units: an astral character is one column. */
const width = (s: string) => [...s].length;

/**
 * Rows (the first is the header) as columns two spaces apart, each as wide
 * as its widest cell; `right` lists the columns aligned right (counts).
 */
export function columns(rows: readonly (readonly string[])[], right: readonly number[] = []): string[] {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((row) => width(row[i] ?? ''))));
  return rows.map((row) =>
    widths
      .map((w, i) => {
        const cell = row[i] ?? '';
        const pad = ' '.repeat(w - width(cell));
        return right.includes(i) ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd(),
  );
}
