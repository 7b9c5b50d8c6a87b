import http from 'node:http';
import { splitHostPort } from '../config/load.js';

/**
 * GET /healthz: 200 "ok" while the proxy accepts connections, 503 "draining" during shutdown.
 * A readiness probe for orchestrators (docker-compose healthcheck, Kubernetes).
 */
export async function startHealthServer(listen: string, isDraining: () => boolean): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') {
      const draining = isDraining();
      res.writeHead(draining ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(draining ? 'draining\n' : 'ok\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  const { host, port } = splitHostPort(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve());
  });
  return server;
}
