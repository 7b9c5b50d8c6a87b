/**
 * Message tags of the PostgreSQL v3 wire protocol.
 * Reference: PostgreSQL docs, "Frontend/Backend Protocol" → "Message Formats" (protocol-message-formats.html).
 * Each tag is the first byte of a typed message, followed by an Int32 length that counts itself
 * but not the tag.
 */

/** Messages a client (frontend) sends after the startup packet. */
export const FrontendTag = {
  Query: 0x51, // 'Q' simple query: one string, may hold several statements
  Parse: 0x50, // 'P' extended: create a prepared statement (name, SQL, parameter types)
  Bind: 0x42, // 'B' extended: bind parameters to a prepared statement, creating a portal
  Describe: 0x44, // 'D' extended: describe a statement ('S') or portal ('P')
  Execute: 0x45, // 'E' extended: run a portal, with a row limit (0 = all)
  Sync: 0x53, // 'S' extended: end of a batch; the server answers ReadyForQuery
  Flush: 0x48, // 'H' extended: ask the server to send what it has, without ending the batch
  Close: 0x43, // 'C' extended: close a statement ('S') or portal ('P')
  CopyData: 0x64, // 'd' COPY FROM STDIN payload
  CopyDone: 0x63, // 'c' end of COPY FROM STDIN data
  CopyFail: 0x66, // 'f' abort COPY FROM STDIN with a message
  FunctionCall: 0x46, // 'F' fast-path function call by OID (no SQL text)
  Terminate: 0x58, // 'X' orderly close
  AuthResponse: 0x70, // 'p' PasswordMessage / SASLInitialResponse / SASLResponse / GSSResponse
} as const;

/** Messages the server (backend) sends. */
export const BackendTag = {
  Authentication: 0x52, // 'R' AuthenticationOk / MD5 / SASL / SASLContinue / SASLFinal ...
  BackendKeyData: 0x4b, // 'K' process id + secret key used by CancelRequest
  BindComplete: 0x32, // '2'
  CloseComplete: 0x33, // '3'
  CommandComplete: 0x43, // 'C' command tag, e.g. "SELECT 1"
  CopyData: 0x64, // 'd'
  CopyDone: 0x63, // 'c'
  CopyInResponse: 0x47, // 'G' server now expects CopyData from the client
  CopyOutResponse: 0x48, // 'H' server now sends CopyData
  CopyBothResponse: 0x57, // 'W' replication only
  DataRow: 0x44, // 'D'
  EmptyQueryResponse: 0x49, // 'I'
  ErrorResponse: 0x45, // 'E'
  FunctionCallResponse: 0x56, // 'V'
  NegotiateProtocolVersion: 0x76, // 'v'
  NoData: 0x6e, // 'n'
  NoticeResponse: 0x4e, // 'N'
  NotificationResponse: 0x41, // 'A' LISTEN/NOTIFY payload
  ParameterDescription: 0x74, // 't'
  ParameterStatus: 0x53, // 'S' run-time parameter report (server_version, search_path, ...)
  ParseComplete: 0x31, // '1'
  PortalSuspended: 0x73, // 's' Execute hit its row limit
  ReadyForQuery: 0x5a, // 'Z' with transaction status 'I' | 'T' | 'E'
  RowDescription: 0x54, // 'T'
} as const;

/**
 * Request codes carried in the Int32 that follows the length in an untyped startup packet
 * ("Message Formats": SSLRequest, GSSENCRequest, CancelRequest, StartupMessage).
 */
export const StartupCode = {
  SSLRequest: 80877103, // 1234 << 16 | 5679
  GSSENCRequest: 80877104, // 1234 << 16 | 5680
  CancelRequest: 80877102, // 1234 << 16 | 5678
  /** Protocol 3.0; the high 16 bits are the major version. */
  ProtocolV3: 196608,
} as const;

/** Authentication request subtypes in an 'R' message. */
export const AuthCode = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

/** Transaction status byte of ReadyForQuery. */
export type TxStatus = 'I' | 'T' | 'E';

/** PostgreSQL rejects startup packets longer than this (MAX_STARTUP_PACKET_LENGTH in pqcomm.h). */
export const MAX_STARTUP_PACKET_BYTES = 10000;
