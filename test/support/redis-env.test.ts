import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { REDIS_URL } from './redis.js';

// The global setup resolved a Redis for this run (REDIS_URL, the local default, or one it started).
it('a Redis answers at REDIS_URL', async () => {
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    expect(await r.ping()).toBe('PONG');
  } finally {
    r.disconnect();
  }
});
