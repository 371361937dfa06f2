import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort, pingRedis as ping } from './redis-tools.js';

/**
 * Makes `npm test` work where no Redis is configured: REDIS_URL if set; else 127.0.0.1:6379 if it answers
 * PING; else a throw-away `redis-server` on a free loopback port (when the binary is installed), stopped at
 * the end. Test processes inherit REDIS_URL from here. Without any Redis the Redis suites fail loudly.
 */

let child: ChildProcess | undefined;

export async function setup(): Promise<void> {
  if (process.env.REDIS_URL) return;
  if (await ping('127.0.0.1', 6379)) {
    process.env.REDIS_URL = 'redis://127.0.0.1:6379';
    return;
  }
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    process.stderr.write('[fgsn tests] no Redis at 127.0.0.1:6379 and no redis-server installed: set REDIS_URL\n');
    return;
  }
  const port = await freePort();
  child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !(await ping('127.0.0.1', port)); i++) await new Promise((r) => setTimeout(r, 50));
  process.env.REDIS_URL = `redis://127.0.0.1:${port}`;
  process.stderr.write(`[fgsn tests] started redis-server on port ${port}\n`);
}

export async function teardown(): Promise<void> {
  child?.kill();
}
