import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { applyRowDiff } from '../defense/index.js';

const USAGE = 'usage: fgsn apply-diff --model DIR --diff FILE --out DIR [--no-verify]';

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { model: { type: 'string' }, diff: { type: 'string' }, out: { type: 'string' }, 'no-verify': { type: 'boolean' }, help: { type: 'boolean' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!values.model || !values.diff || !values.out) throw new FgsnError('CLI_USAGE', USAGE);
  const r = await applyRowDiff(values.model, values.diff, values.out, { verify: !values['no-verify'] });
  process.stdout.write(JSON.stringify({ out: values.out, ...r }, null, 2) + '\n');
  return 0;
}
