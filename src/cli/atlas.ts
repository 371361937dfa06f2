import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { addCategory, findAtlas, getOrBuildAtlas, listAtlases, summarizeAtlas } from '../defense/index.js';
import { readProbes } from '../probes.js';
import { defaultCacheDir } from './harden-shared.js';

const USAGE = `usage: fgsn atlas build --aligned DIR --harmful H.jsonl --benign B.jsonl [--band-share S] [--clusters K]
       fgsn atlas show ID [--top N]
       fgsn atlas list
       fgsn atlas add-category ID --category NAME --probes P.jsonl
  common: [--cache-dir DIR] [--execution-provider cpu|cuda]
Atlases are cached under <cache-dir>/atlas/<id> (id = content hash of the aligned weights, probes and options).`;

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      aligned: { type: 'string' }, harmful: { type: 'string' }, benign: { type: 'string' }, 'band-share': { type: 'string' },
      clusters: { type: 'string' }, top: { type: 'string' }, category: { type: 'string' }, probes: { type: 'string' },
      'cache-dir': { type: 'string' }, 'execution-provider': { type: 'string' }, help: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (sub === undefined || sub === '--help' || values.help) {
    process.stdout.write(USAGE + '\n');
    return sub === undefined ? 2 : 0;
  }
  const cacheDir = resolve(values['cache-dir'] ?? defaultCacheDir());
  const ep = values['execution-provider'];
  if (ep !== undefined && ep !== 'cpu' && ep !== 'cuda') throw new FgsnError('CLI_USAGE', '--execution-provider is cpu or cuda');
  const print = (x: unknown): number => {
    process.stdout.write(JSON.stringify(x, null, 2) + '\n');
    return 0;
  };
  switch (sub) {
    case 'build': {
      if (!values.aligned || !values.harmful || !values.benign) throw new FgsnError('CLI_USAGE', USAGE);
      const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v));
      const { atlas, cached } = await getOrBuildAtlas(resolve(values.aligned), await readProbes(values.harmful), await readProbes(values.benign), cacheDir, {
        ...(values['band-share'] ? { bandShare: num(values['band-share']) } : {}),
        ...(values.clusters ? { clustersPerCategory: num(values.clusters) } : {}),
        ...(ep ? { executionProvider: ep } : {}),
      });
      return print({ id: atlas.id, cached, dir: atlas.dir });
    }
    case 'show': {
      if (positionals.length !== 1) throw new FgsnError('CLI_USAGE', USAGE);
      return print(summarizeAtlas(await findAtlas(cacheDir, positionals[0]), values.top ? Number(values.top) : 5));
    }
    case 'list':
      return print(await listAtlases(cacheDir));
    case 'add-category': {
      if (positionals.length !== 1 || !values.category || !values.probes) throw new FgsnError('CLI_USAGE', USAGE);
      const parent = await findAtlas(cacheDir, positionals[0]);
      const { atlas, cached } = await addCategory(parent, await readProbes(values.probes), values.category, cacheDir, ep ? { executionProvider: ep } : {});
      return print({ id: atlas.id, parent: parent.id, cached, categories: atlas.categories.map((c) => c.name) });
    }
    default:
      throw new FgsnError('CLI_USAGE', `unknown atlas subcommand "${sub}"\n${USAGE}`);
  }
}
