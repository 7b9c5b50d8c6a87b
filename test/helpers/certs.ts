import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runOk } from './spawn.js';

/**
 * A throwaway certificate authority and a server certificate it signed (SAN 127.0.0.1 and
 * localhost), generated with openssl at test time so no key material lives in the repository.
 * Each call makes an independent CA, so a second call gives a "wrong CA" for negative tests.
 */
export interface TestCerts {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  remove(): Promise<void>;
}

// P-256 keys: generating them takes milliseconds, RSA takes much longer on a slow machine.
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/**
 * Writes <name>.key and <name>.crt into dir: a server certificate (CN localhost, SAN 127.0.0.1 and
 * localhost) signed by the CA in dir/ca.crt + dir/ca.key.
 */
async function signServerCert(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const p = (file: string) => path.join(dir, file);
  await runOk('openssl', [
    'req', '-new', ...EC_KEY,
    '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`),
    '-subj', '/CN=localhost',
  ]);
  await writeFile(
    p(`${name}.ext`),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '',
    ].join('\n'),
  );
  await runOk('openssl', [
    'x509', '-req', '-in', p(`${name}.csr`),
    '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p(`${name}.crt`), '-days', '2', '-extfile', p(`${name}.ext`),
  ]);
  return { cert: p(`${name}.crt`), key: p(`${name}.key`) };
}

/**
 * Another server certificate from the same CA (a different key and certificate, same names), e.g.
 * for a proxy that must not present the upstream server's own certificate.
 */
export function issueServerCert(ca: TestCerts, name: string): Promise<{ cert: string; key: string }> {
  if (!/^[a-z0-9-]+$/.test(name) || name === 'ca') throw new Error(`bad certificate name: ${name}`);
  return signServerCert(ca.dir, name);
}

export async function generateTestCerts(commonName = 'pgwarden-test'): Promise<TestCerts> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgw-certs-'));
  const p = (name: string) => path.join(dir, name);
  try {
    await runOk('openssl', [
      'req', '-x509', ...EC_KEY,
      '-keyout', p('ca.key'), '-out', p('ca.crt'),
      '-days', '2', '-subj', `/CN=${commonName} CA`,
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    await signServerCert(dir, 'server');
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    caCert: p('ca.crt'),
    caKey: p('ca.key'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
