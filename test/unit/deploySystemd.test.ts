import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';

const UNIT = fileURLToPath(new URL('../../../deploy/systemd/credgate.service', import.meta.url));
const text = readFileSync(UNIT, 'utf8');
const available = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;

/** `Key=value` lines of one section (repeated keys keep every value). */
function section(name: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  let current = '';
  for (const line of text.split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line.trim());
    if (header) current = header[1]!;
    const pair = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (current === name && pair) entries.set(pair[1]!, [...(entries.get(pair[1]!) ?? []), pair[2]!]);
  }
  return entries;
}

/**
 * `systemd-analyze verify` checks the unit offline, including that ExecStart's binary exists. The
 * unit names /usr/bin/node (Debian's nodejs, NodeSource); where the test's own Node lives elsewhere
 * (nvm, a tarball), the copy under test names that one instead — nothing else is changed. Its
 * warnings (an unknown or misspelt directive is only a warning) fail the test as errors would.
 */
describe('deploy/systemd/credgate.service', { skip: !available && 'systemd-analyze is not installed' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const node = existsSync('/usr/bin/node') ? '/usr/bin/node' : process.execPath;
  const verify = (unitText: string) => {
    const file = join(dir, 'credgate.service');
    writeFileSync(file, unitText.replace('ExecStart=/usr/bin/node ', `ExecStart=${node} `));
    return spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8', timeout: 30_000 });
  };

  test('systemd-analyze verify accepts it without a warning', () => {
    const result = verify(text);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr.trim(), '');
  });

  test('systemd-analyze verify rejects a misspelt directive and a missing binary (the check is real)', () => {
    const typo = verify(text.replace('ProtectSystem=strict', 'ProtectSystm=strict'));
    assert.match(typo.stderr, /Unknown key 'ProtectSystm'/);
    const missing = verify(text.replace('ExecStart=/usr/bin/node ', 'ExecStart=/usr/bin/no-such-node '));
    assert.notEqual(missing.status, 0);
  });

  test('systemd-analyze security rates the sandbox "OK" (exposure ≤ 2.0 of 10)', () => {
    const file = join(dir, 'credgate.service');
    writeFileSync(file, text);
    const result = spawnSync('systemd-analyze', ['security', '--offline=true', '--threshold=20', '--no-pager', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(result.status, 0, result.stdout.split('\n').slice(-3).join('\n') + result.stderr);
    // Deny beside the allow: without the sandbox the same threshold fails.
    const bare = text.split('\n').filter((l) => !/^(Protect|Private|Restrict|SystemCall|Capability|NoNewPriv|DynamicUser|Lock|Remove|UMask|ProcSubset|Ambient)/.test(l)).join('\n');
    writeFileSync(file, bare);
    assert.notEqual(spawnSync('systemd-analyze', ['security', '--offline=true', '--threshold=20', '--no-pager', file], { encoding: 'utf8' }).status, 0);
  });

  test('hardening: no privileges, read-only system, IP and Unix sockets only, system-service calls only; W^X is left to V8 and said so', () => {
    const service = section('Service');
    const one = (key: string) => service.get(key)?.at(-1);
    assert.equal(one('DynamicUser'), 'yes');
    assert.equal(one('NoNewPrivileges'), 'yes');
    assert.equal(one('CapabilityBoundingSet'), '');
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('ProtectHome'), 'yes');
    assert.equal(one('PrivateTmp'), 'yes');
    assert.equal(one('RestrictAddressFamilies'), 'AF_INET AF_INET6 AF_UNIX');
    assert.ok(service.get('SystemCallFilter')?.includes('@system-service'));
    // V8's JIT needs writable and executable memory: MemoryDenyWriteExecute=yes makes Node abort.
    assert.equal(service.get('MemoryDenyWriteExecute'), undefined);
    assert.match(text, /MemoryDenyWriteExecute= is deliberately NOT set: V8/);
  });

  test('run, reload and configuration: node runs cli.js serve; reload is SIGHUP (policy reload); settings from an EnvironmentFile; the key as a credential', () => {
    const service = section('Service');
    assert.match(service.get('ExecStart')![0]!, /^\/usr\/bin\/node \/opt\/credgate\/dist\/src\/cli\.js serve$/);
    assert.equal(service.get('ExecReload')![0], '/bin/kill -HUP $MAINPID');
    assert.equal(service.get('EnvironmentFile')![0], '/etc/credgate/credgate.env');
    assert.ok(service.get('Environment')!.includes('CREDGATE_INTROSPECTION_KEY_FILE=%d/introspection.pem'));
    assert.match(service.get('LoadCredential')![0]!, /^introspection\.pem:\/etc\/credgate\/introspection\.pem$/);
    assert.ok(Number.parseInt(service.get('TimeoutStopSec')![0]!, 10) > 10, "longer than credgate's own 10 s drain");
    assert.equal(section('Install').get('WantedBy')![0], 'multi-user.target');
  });
});
