import type { CopyInfo } from '../masking/copy-format.js';
import type { SelectLineage } from '../masking/lineage.js';
/**
 * What classification knows about one SQL statement. Produced from PostgreSQL's own parse tree
 * (libpg-query), by AST node and field, never by the first keyword.
 */
export const KINDS = ['read', 'write', 'ddl', 'privilege', 'export', 'admin', 'session', 'transaction', 'utility'] as const;
export type Kind = (typeof KINDS)[number];

export interface RelationRef {
  /** Schema as written; undefined when unqualified (resolved against the search_path later). */
  schema?: string;
  name: string;
  access: 'read' | 'write' | 'ddl';
}

export interface SettingChange {
  name: string;
  /**
   * The new value when it is a constant; undefined for RESET / DEFAULT or a computed value.
   * For search_path, SET's arguments are joined the way PostgreSQL stores them: each element
   * double-quoted unless it is a plain lower-case name.
   */
  value?: string;
  /** SET LOCAL or set_config(..., true): reverts at transaction end. */
  local: boolean;
  via: 'set' | 'reset' | 'set_config' | 'alter-role' | 'alter-database' | 'alter-system';
}

export interface StatementInfo {
  /** The parse node type of the statement, e.g. SelectStmt, CopyStmt. */
  node: string;
  /** The main kind, the one shown to humans. */
  kind: Kind;
  /** Every kind the statement has, e.g. a SELECT with a DELETE in a CTE is read + write. */
  kinds: Kind[];
  relations: RelationRef[];
  /** Functions called, lower-cased, schema-qualified when written so ('pg_catalog.pg_read_file'). */
  functions: string[];
  /** Column references as written ('email', 'c.email', 'c.*'). */
  columns: string[];
  settings: SettingChange[];
  /**
   * Why the statement cannot be fully analysed (a DO block, a function body, dynamic SQL, an
   * EXECUTE of an unknown prepared statement ...). Non-empty → the policy's `unanalysable` action.
   */
  unanalysable: string[];
  /** SQL-level PREPARE/DECLARE: the name it defines; EXECUTE/FETCH/MOVE/CLOSE: the name it uses. */
  defines?: { type: 'prepared' | 'cursor'; name: string };
  uses?: { type: 'prepared' | 'cursor'; name: string };
  /** CLOSE / DEALLOCATE / DISCARD: the name it removes, or null for ALL. */
  forgets?: { type: 'prepared' | 'cursor' | 'all'; name: string | null };
  /**
   * An UPDATE or MERGE anywhere in the statement (top level, a CTE, COPY (…)): it can copy one
   * column's values into another column of the same rows.
   */
  updatesRows?: boolean;
  /** COPY ... TO/FROM a server file or PROGRAM. */
  serverFileAccess?: boolean;
  /** Statements returning rows: where each output column comes from (masking). */
  lineage?: SelectLineage;
  /** COPY: direction, endpoint, data format and what it copies (masking of COPY TO STDOUT). */
  copy?: CopyInfo;
}

export type ClassifyResult =
  | { ok: true; statements: StatementInfo[] }
  | { ok: false; message: string; position?: number };
