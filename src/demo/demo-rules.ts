import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BUNDLED_RULES_DIR } from '../policy/build-judge.js';

/**
 * The demo's rules, written into its own directory (never into the repository's rules/): the
 * shipped function denials as they are, plus a policy and masking rules for the demo schema.
 * They are hot-reloaded like any rules directory, so a user can edit them while the demo runs.
 */
const DEMO_POLICY = `# pgwarden demo policy (README.md, "Rules"). Edit and save: reloaded at once.
policy:
  default: allow          # ordinary reads and writes
  unanalysable: review    # DO blocks, CALL, function bodies
  fastpath: deny
  masked_copy: review     # copying masked columns somewhere unmasked (INSERT ... SELECT, COPY ... TO)
  rules:
    - name: customers-read-only
      description: agents may read customers, never change them
      match: { relations: [customers], kind: [write, ddl] }
      action: deny

    - name: schema-changes
      description: DDL changes the schema (CREATE, ALTER, DROP, TRUNCATE, ...)
      match: { kind: [ddl] }
      action: review

    - name: privilege-changes
      description: GRANT/REVOKE, roles and SET ROLE change who may do what
      match: { kind: [privilege] }
      action: review

    - name: bulk-export
      description: COPY ... TO, SELECT INTO and CREATE TABLE AS copy data out of its table
      match: { kind: [export] }
      action: review

    - name: payroll-changes
      description: changes to employees (salaries) are approved one at a time
      match: { relations: [employees], kind: [write] }
      action: review
      review: { grants: false }   # approvers: 2 would need two reviewers

    - name: server-administration
      description: ALTER SYSTEM, VACUUM, extensions, COPY to/from server files
      match: { kind: [admin] }
      action: review
`;

const DEMO_MASKING = `# Columns masked in every result an agent receives (README.md, "Masking").
masking:
  - table: public.customers
    columns:
      email: partial_email                     # alice.martin@example.com -> a***@example.com
      ssn: redact                              # -> ***
      phone: { strategy: keep_last, count: 4 } # -> ***0143
      card_number: hash                        # keyed HMAC: equal cards give equal hashes
      birth_date: "null"
    exempt: [dpo]                              # this database user sees raw values
  - table: public.employees
    columns:
      salary: redact
      ssn: redact
    exempt: [hr]
`;

/** Writes the demo rules into `dir` (created if needed). */
export function writeDemoRules(dir: string): void {
  mkdirSync(dir, { recursive: true });
  // The shipped denials of dangerous functions (pg_read_file, dblink, pg_terminate_backend …).
  copyFileSync(path.join(BUNDLED_RULES_DIR, 'functions.yaml'), path.join(dir, 'functions.yaml'));
  writeFileSync(path.join(dir, 'masking.yaml'), DEMO_MASKING);
  writeFileSync(path.join(dir, 'policy.yaml'), DEMO_POLICY);
}
