// A node:test reporter: one line per test, the failures' errors, and a closing line
// "N passed, N failed" (what scripts/e2e.sh and CI read).
import { inspect } from 'node:util';

function errorText(error) {
  if (!error) return '';
  // node:test wraps the test's own error in `cause`.
  const inner = error.cause ?? error;
  const text = inner instanceof Error ? inner.stack || inner.message : inspect(inner, { depth: 4 });
  return text
    .split('\n')
    .map((line) => `    ${line}`)
    .join('\n');
}

export default async function* reporter(source) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for await (const event of source) {
    const data = event.data || {};
    const isSuite = data.details && data.details.type === 'suite';
    switch (event.type) {
      case 'test:pass': {
        if (isSuite) break;
        const ms = Math.round(data.details?.duration_ms ?? 0);
        if (data.skip || data.todo) {
          skipped += 1;
          yield `- ${data.name} (skipped)\n`;
        } else {
          passed += 1;
          yield `✔ ${data.name} (${ms} ms)\n`;
        }
        break;
      }
      case 'test:fail': {
        if (isSuite) break;
        failed += 1;
        const ms = Math.round(data.details?.duration_ms ?? 0);
        yield `✖ ${data.name} (${ms} ms)\n${errorText(data.details?.error)}\n`;
        break;
      }
      case 'test:stderr':
      case 'test:stdout':
        if (data.message) yield data.message;
        break;
      default:
        break;
    }
  }
  yield `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
}
