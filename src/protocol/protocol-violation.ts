/**
 * Raised by the pure codec when the peer breaks the wire protocol. The session answers it with a
 * FATAL 08P01 ErrorResponse and closes that one connection; it never escapes to the process.
 */
export class ProtocolViolation extends Error {
  override readonly name = 'ProtocolViolation';
  constructor(
    message: string,
    /** SQLSTATE to report; 08P01 (protocol_violation) unless a more precise code applies. */
    readonly sqlstate: string = '08P01',
  ) {
    super(message);
  }
}
