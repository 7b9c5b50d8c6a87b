/**
 * Glob patterns for rule matching: `*` any run of characters, `?` one character, everything
 * else literal. Compiled once per rules load.
 */
export type Glob = (text: string) => boolean;

export function compileGlob(pattern: string): Glob {
  if (!/[*?]/.test(pattern)) return (text) => text === pattern;
  const source = pattern
    .split('')
    .map((ch) => (ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  const re = new RegExp(`^${source}$`, 's');
  return (text) => re.test(text);
}
