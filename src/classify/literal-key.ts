/**
 * A cache key for SQL text with its literals blanked out, so that simple-protocol traffic with
 * inline values (`... WHERE aid = 48213`) can reuse a classification without a parse.
 *
 * This is a deliberately narrow scanner, not a second SQL parser: it only succeeds on plain
 * ASCII text whose literals are simple numbers ([0-9]+ or [0-9]+.[0-9]+) and simple '...'
 * strings, and gives up (null) on anything else: E'', U&'', B'', X'', N'' prefixes, dollar
 * quotes, backslashes, exponents, hex, unterminated quotes or comments, non-ASCII. Replacing one
 * such literal by another never changes the token structure PostgreSQL's lexer sees.
 *
 * Whether a classification may be shared between texts of one key is decided by the classifier
 * (only plain SELECT/INSERT/UPDATE/DELETE whose classification cannot depend on a literal).
 */
const isIdentChar = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c === 0x24;
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/** Anything but printable ASCII, tab and newlines, or a backslash anywhere (also inside quotes). */
const UNHANDLED = /[^\t\n\r\x20-\x5b\x5d-\x7e]/;

export function literalKey(sql: string): string | null {
  if (UNHANDLED.test(sql)) return null;
  const n = sql.length;
  let out = '';
  let start = 0; // start of the pending verbatim run
  let i = 0;
  let replaced = false;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) {
      // -- comment to end of line: kept verbatim.
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
      continue;
    }
    if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
      // /* comment */, nested as in PostgreSQL.
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql.charCodeAt(i) === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
          depth++;
          i += 2;
        } else if (sql.charCodeAt(i) === 0x2a && sql.charCodeAt(i + 1) === 0x2f) {
          depth--;
          i += 2;
        } else i++;
      }
      if (depth > 0) return null;
      continue;
    }
    if (c === 0x22) {
      // "quoted identifier": kept verbatim ("" is an escaped quote).
      i++;
      for (;;) {
        const q = sql.indexOf('"', i);
        if (q < 0) return null;
        i = q + 1;
        if (sql.charCodeAt(i) !== 0x22) break;
        i++;
      }
      continue;
    }
    if (c === 0x27) {
      // 'string': no prefix letter allowed (E'', U&'', B'', X'', N'' are other tokens).
      if (i > 0 && (isIdentChar(sql.charCodeAt(i - 1)) || sql.charCodeAt(i - 1) === 0x26)) return null;
      let j = i + 1;
      for (;;) {
        const q = sql.indexOf("'", j);
        if (q < 0) return null;
        j = q + 1;
        if (sql.charCodeAt(j) !== 0x27) break;
        j++;
      }
      out += sql.slice(start, i) + "'?'";
      i = j;
      start = i;
      replaced = true;
      continue;
    }
    if (c === 0x24) {
      // $1 parameters stay; anything else with $ (dollar quotes) is not handled here.
      if (!isDigit(sql.charCodeAt(i + 1)) || (i > 0 && isIdentChar(sql.charCodeAt(i - 1)))) return null;
      i++;
      while (i < n && isDigit(sql.charCodeAt(i))) i++;
      continue;
    }
    if (isDigit(c)) {
      if (i > 0 && (isIdentChar(sql.charCodeAt(i - 1)) || sql.charCodeAt(i - 1) === 0x2e)) {
        // Part of an identifier (t1) is fine; a digit right after '.' is not a case we handle.
        if (sql.charCodeAt(i - 1) === 0x2e) return null;
        i++;
        continue;
      }
      let j = i;
      while (j < n && isDigit(sql.charCodeAt(j))) j++;
      if (sql.charCodeAt(j) === 0x2e) {
        j++;
        if (!isDigit(sql.charCodeAt(j))) return null;
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
      }
      const next = sql.charCodeAt(j);
      if (j < n && (isIdentChar(next) || next === 0x2e)) return null;
      out += sql.slice(start, i) + '?';
      i = j;
      start = i;
      replaced = true;
      continue;
    }
    i++;
  }
  if (!replaced) return null;
  return out + sql.slice(start);
}
