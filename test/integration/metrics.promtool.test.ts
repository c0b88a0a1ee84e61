import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import {
  alertRules,
  DASHBOARD_FILE,
  dashboard,
  dashboardExpressions,
  dashboardPanels,
  promtool,
  RULE_FILES,
  ruleTestFiles,
  rules,
} from '../fixtures/monitoring.js';

// The monitoring files in metrics/ checked by Prometheus's own tool (Debian bookworm's promtool
// 2.42, installed by test/setup.sh), and held to the rules the issue sets: every alert tested
// firing and quiet, documented with a runbook, the dashboard tied to a datasource variable.

interface AlertCase {
  alertname: string;
  eval_time: string;
  exp_alerts?: { exp_labels?: Record<string, string>; exp_annotations?: Record<string, string> }[];
}
interface RuleTestFile {
  rule_files: string[];
  tests: { name?: string; alert_rule_test?: AlertCase[] }[];
}

const alertCases = (): (AlertCase & { file: string; group: string })[] =>
  ruleTestFiles().flatMap((file) => {
    const doc = parseYaml(readFileSync(file, 'utf8')) as RuleTestFile;
    return doc.tests.flatMap((t, i) => (t.alert_rule_test ?? []).map((c) => ({ ...c, file, group: t.name ?? `#${i}` })));
  });

const README = 'metrics/README.md';
const anchorOf = (alert: string) => alert.toLowerCase();

/** The runbook section of one alert: from its `### Name` heading to the next heading of that level or above. */
function runbookSection(alert: string): string | undefined {
  const text = readFileSync(README, 'utf8');
  const start = text.indexOf(`\n### ${alert}\n`);
  if (start < 0) return undefined;
  const rest = text.slice(start + 1);
  const end = rest.slice(4).search(/\n#{1,3} /);
  return end < 0 ? rest : rest.slice(0, end + 4);
}

describe('Prometheus rules (promtool)', () => {
  test('promtool runs (the files use nothing newer than 2.42, Debian bookworm\'s)', async (t) => {
    const { code, stdout, stderr } = await promtool(['--version']);
    assert.equal(code, 0, stderr);
    const version = /promtool, version (\S+)/.exec(stdout + stderr)?.[1];
    assert.ok(version, stdout + stderr);
    t.diagnostic(`promtool ${version}`);
  });

  test('promtool check rules: both rule files are valid', async () => {
    const { code, stdout, stderr } = await promtool(['check', 'rules', ...RULE_FILES]);
    assert.equal(code, 0, stdout + stderr);
    for (const file of RULE_FILES) assert.match(stdout, new RegExp(`Checking ${file}\\n\\s+SUCCESS: \\d+ rules found`));
  });

  test('promtool test rules: every unit test in metrics/tests passes', async () => {
    const files = ruleTestFiles();
    assert.ok(files.length > 0, 'no rule tests found');
    const { code, stdout, stderr } = await promtool(['test', 'rules', ...files]);
    assert.equal(code, 0, stdout + stderr);
    assert.doesNotMatch(stdout + stderr, /FAILED/);
    assert.equal(stdout.match(/SUCCESS/g)?.length, files.length, stdout);
  });

  test('every rule test file loads both rule files, evaluating the recording rules first', () => {
    for (const file of ruleTestFiles()) {
      const doc = parseYaml(readFileSync(file, 'utf8')) as RuleTestFile & { group_eval_order?: string[] };
      assert.deepEqual([...doc.rule_files].sort(), ['../alerts.yml', '../recording-rules.yml'], file);
      assert.deepEqual(doc.group_eval_order, ['credgate.rules', 'credgate.alerts'], file);
    }
  });

  test('every alert has a test where it fires, with all its labels and annotations, and one where it does not', () => {
    const cases = alertCases();
    const known = new Set(alertRules().map((r) => r.alert));
    // promtool passes a quiet case for an alert that does not exist at all: refuse typos here.
    for (const c of cases) assert.ok(known.has(c.alertname), `${c.file} (${c.group}) tests unknown alert ${c.alertname}`);
    for (const rule of alertRules()) {
      const mine = cases.filter((c) => c.alertname === rule.alert);
      const firing = mine.filter((c) => (c.exp_alerts ?? []).length > 0);
      assert.ok(firing.length > 0, `${rule.alert}: no test where it fires`);
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${rule.alert}: no test where it stays quiet`,
      );
      for (const c of firing) {
        for (const expected of c.exp_alerts!) {
          for (const [label, value] of Object.entries(rule.labels ?? {})) assert.equal(expected.exp_labels?.[label], value, `${rule.alert} in ${c.file}: label ${label}`);
          assert.deepEqual(Object.keys(expected.exp_annotations ?? {}).sort(), Object.keys(rule.annotations ?? {}).sort(), `${rule.alert} in ${c.file}: every annotation must be checked`);
        }
      }
    }
  });

  test('every alert has a severity, a summary, a description, a for duration and a runbook section in metrics/README.md', () => {
    const alerts = alertRules();
    assert.ok(alerts.length >= 9);
    for (const rule of alerts) {
      const name = rule.alert!;
      assert.match(name, /^Credgate[A-Z][A-Za-z]+$/);
      assert.ok(['critical', 'warning'].includes(rule.labels?.severity ?? ''), `${name}: severity`);
      assert.match(rule.for ?? '', /^\d+[smh]$/, `${name}: for`);
      assert.ok(rule.annotations?.summary, `${name}: summary`);
      assert.ok(rule.annotations?.description, `${name}: description`);
      assert.match(rule.annotations?.summary + rule.annotations!.description!, /\$labels\.(instance|job)/, `${name}: says which instance or job`);
      assert.equal(rule.annotations?.runbook_url, `${README}#${anchorOf(name)}`, `${name}: runbook_url`);
      const section = runbookSection(name);
      assert.ok(section, `${README} has no "### ${name}" section`);
      for (const part of ['Summary', 'Meaning', 'Confirm', 'Action']) assert.match(section, new RegExp(`\\*\\*${part}[^*]*\\*\\*`), `${name}: runbook lacks ${part}`);
    }
  });

  test('recording rules are named credgate:<what>:<how> and every one is used by an alert or documented', () => {
    const recorded = RULE_FILES.flatMap(rules).filter((r) => r.record !== undefined);
    const readme = readFileSync(README, 'utf8');
    const alertsText = alertRules().map((r) => r.expr).join('\n');
    for (const r of recorded) {
      assert.match(r.record!, /^credgate:[a-z0-9_]+:[a-z0-9_]+$/);
      assert.ok(alertsText.includes(r.record!) || readme.includes(r.record!), `${r.record} is neither used by an alert nor in ${README}`);
    }
  });

  test('promtool check config: the example scrape configuration is valid and loads both rule files', async () => {
    const { code, stdout, stderr } = await promtool(['check', 'config', 'metrics/prometheus.yml']);
    assert.equal(code, 0, stdout + stderr);
    assert.match(stdout, /SUCCESS: 2 rule files found/);
    const config = parseYaml(readFileSync('metrics/prometheus.yml', 'utf8')) as { scrape_configs: { job_name: string }[] };
    // CredgateDown matches on this job name.
    assert.ok(config.scrape_configs.some((s) => s.job_name === 'credgate'));
  });
});

describe('Grafana dashboard', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'credgate-dashboard-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  test('every panel and query uses the ${datasource} Prometheus variable; nothing names a datasource of its own', () => {
    const d = dashboard();
    const variable = d.templating.list.find((v) => v.name === 'datasource');
    assert.equal(variable?.type, 'datasource');
    assert.equal(variable?.query, 'prometheus');
    for (const v of d.templating.list.filter((v) => v.type === 'query')) assert.deepEqual(v.datasource, { type: 'prometheus', uid: '${datasource}' }, `variable ${v.name}`);
    const panels = dashboardPanels(d).filter((p) => p.type !== 'row');
    assert.ok(panels.length >= 20);
    for (const p of panels) {
      assert.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `panel ${p.title}`);
      assert.ok((p.targets ?? []).length > 0, `panel ${p.title} has no query`);
      for (const t of p.targets!) assert.deepEqual(t.datasource, { type: 'prometheus', uid: '${datasource}' }, `panel ${p.title}`);
    }
    // Only the variable and Grafana's built-in annotation source may appear as a uid.
    const uids = [...readFileSync(DASHBOARD_FILE, 'utf8').matchAll(/"uid":\s*"([^"]*)"/g)].map((m) => m[1]);
    assert.deepEqual([...new Set(uids)].sort(), ['${datasource}', '-- Grafana --', d.uid].sort());
    const ids = dashboardPanels(d).map((p) => (p as { id?: number }).id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids must be unique');
  });

  test('the dashboard has the panels the issue asks for', () => {
    const exprs = dashboardExpressions().join('\n');
    for (const needed of [
      /sum by \(result\) \(rate\(credgate_decisions_total/,
      /sum by \(reason\) \(rate\(credgate_decisions_total/,
      /reason="invalid_credentials"/,
      /histogram_quantile\(0\.5, .*credgate_decision_duration_seconds_bucket/,
      /histogram_quantile\(0\.99, .*credgate_decision_duration_seconds_bucket/,
      /sum by \(endpoint, outcome\) \(rate\(credgate_upstream_requests_total/,
      /credgate_upstream_request_duration_seconds_bucket/,
      /credgate_cache_requests_total\{[^}]*result=~"hit\|negative_hit"/,
      /credgate_cache_entries/,
      /credgate_cache_evictions_total/,
      /credgate_throttled_requests_total/,
      /credgate_coalesced_requests_total/,
      /credgate_policy_reloads_total/,
      /credgate_policy_last_reload_successful/,
      /credgate_jwks_refreshes_total/,
      /credgate_build_info/,
      /process_resident_memory_bytes/,
    ]) assert.match(exprs, needed);
  });

  test('every dashboard query is valid PromQL (checked by promtool with the variables filled in)', async () => {
    const exprs = dashboardExpressions();
    // label_values() is Grafana's, not PromQL: check the selector inside it.
    const promql = exprs.map((e) => e.replace(/^label_values\((.*), *[a-z_]+\)$/, '$1'));
    const filled = promql.map((e) => e.replaceAll('$__rate_interval', '5m').replaceAll('$job', 'credgate').replaceAll('$instance', '.+'));
    for (const e of filled) assert.doesNotMatch(e, /\$/, `unfilled variable in ${e}`);
    const file = join(scratch, 'dashboard-queries.yml');
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: filled.map((expr, i) => ({ record: `dashboard:query_${i}:check`, expr })) }] }));
    const { code, stdout, stderr } = await promtool(['check', 'rules', file]);
    assert.equal(code, 0, stdout + stderr);
    assert.match(stdout, new RegExp(`SUCCESS: ${filled.length} rules found`));
  });
});
