/**
 * Text that came from a client (user and application names, quoted identifiers in SQL, reasons)
 * shown on an operator's or reviewer's terminal: control characters become spaces, so it can
 * neither start a fake line nor send escape sequences to the terminal.
 */
export function terminalSafe(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
}
