// autocannon ships no types; only what the bench reads.
declare module 'autocannon' {
  interface Stats {
    average: number;
    p50: number;
    p99: number;
    max: number;
  }
  interface Result {
    requests: Stats & { total: number };
    latency: Stats;
    non2xx: number;
    errors: number;
    duration: number;
  }
  interface Options {
    url: string;
    connections?: number;
    duration?: number;
    headers?: Record<string, string>;
  }
  export default function autocannon(opts: Options): Promise<Result>;
}
