// Drives one etcd v3 server with the `etcd3` npm package (over @grpc/grpc-js) and prints a
// transcript, one line per observation, that must be the same for the reference etcd and for
// Ballast (conformance/tests/clients.rs compares them and checks them against the expected one).
//
// Usage: node etcd3_transcript.js HOST:PORT
//
// Printed deterministically on a fresh single-member server: revisions as they are (every key
// here lives outside /registry/, so they are etcd's with any shard count); lease ids, which the
// server generates, as L1, L2, ...; ports as PORT; TTLs as range checks. Each step has a
// watchdog: one that takes longer than STEP_TIMEOUT_MS ends the process with exit code 3 and a
// line naming the step. Ends with auth enabled on the server.
'use strict';

const { Etcd3, EtcdLockFailedError } = require('etcd3');

const STEP_TIMEOUT_MS = 20000;
const CALL_TIMEOUT_MS = 10000;
const EVENT_WAIT_MS = 5000;
const QUIET_WAIT_MS = 500;

const endpoint = `http://${process.argv[2]}`;
let stepName = 'start';
let watchdog = null;

function step(name) {
  stepName = name;
  clearTimeout(watchdog);
  watchdog = setTimeout(() => {
    console.log(`TIMEOUT in step ${stepName} after ${STEP_TIMEOUT_MS} ms`);
    process.exit(3);
  }, STEP_TIMEOUT_MS);
  console.log(`## ${name}`);
}

const out = line => console.log(line);
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

const leaseNames = new Map();
function leaseName(id) {
  const key = String(id);
  if (key === '0') return '0';
  if (!leaseNames.has(key)) leaseNames.set(key, `L${leaseNames.size + 1}`);
  return leaseNames.get(key);
}

function kv(k) {
  return (
    `key=${k.key.toString()} create=${k.create_revision} mod=${k.mod_revision} ` +
    `version=${k.version} lease=${leaseName(k.lease)} value=${k.value.toString()}`
  );
}

// Lease ids appear in some of the client's messages: printed by name too.
function errorLine(err) {
  const message = err.message.replace(/Lease (\d{6,})/g, (_, id) => `Lease ${leaseName(id)}`);
  return `error ${err.constructor.name} ${message}`;
}

async function attempt(label, fn) {
  try {
    out(`${label}: ${await fn()}`);
  } catch (err) {
    out(`${label}: ${errorLine(err)}`);
  }
}

function client(extra = {}) {
  return new Etcd3({
    hosts: endpoint,
    // A deadline (grpc-timeout) on every unary call; streams stay open.
    defaultCallOptions: ctx => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
    ...extra,
  });
}

// Resolves with the next `n` values an emitter hands to `event`, or rejects after EVENT_WAIT_MS.
function collect(emitter, event, n) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(
      () => reject(new Error(`waited ${EVENT_WAIT_MS} ms for ${n} ${event}, got ${got.length}`)),
      EVENT_WAIT_MS,
    );
    const on = value => {
      got.push(value);
      if (got.length === n) {
        clearTimeout(timer);
        emitter.removeListener(event, on);
        resolve(got);
      }
    };
    emitter.on(event, on);
  });
}

// Watch events in order, as the watcher emits them ('put' and 'delete').
function watchEvents(watcher, n) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(
      () => reject(new Error(`waited ${EVENT_WAIT_MS} ms for ${n} events, got ${got.length}`)),
      EVENT_WAIT_MS,
    );
    const on = res => {
      for (const ev of res.events) {
        const prev = ev.prev_kv ? ` prev=${ev.prev_kv.value.toString()}` : '';
        got.push(`event ${ev.type} ${kv(ev.kv)}${prev}`);
      }
      if (got.length >= n) {
        clearTimeout(timer);
        watcher.removeListener('data', on);
        resolve(got);
      }
    };
    watcher.on('data', on);
  });
}

async function quiet(watcher) {
  let seen = 0;
  const on = res => {
    seen += res.events.length;
  };
  watcher.on('data', on);
  await sleep(QUIET_WAIT_MS);
  watcher.removeListener('data', on);
  return seen === 0 ? 'nothing' : `unexpected ${seen} events`;
}

async function main() {
  const c = client();

  step('put and get');
  let r = await c.put('/t/a').value('v1').exec();
  out(`put /t/a v1: revision=${r.header.revision}`);
  const prev = await c.put('/t/a').value('v2').getPrevious();
  out(`put /t/a v2 getPrevious: ${kv(prev)} header=${prev.header.revision}`);
  r = await c.get('/t/a').exec();
  out(`get /t/a: ${kv(r.kvs[0])} count=${r.count} more=${r.more} header=${r.header.revision}`);
  out(`get /t/a string: ${await c.get('/t/a').string()} exists=${await c.get('/t/a').exists()}`);
  out(`get /t/missing: ${await c.get('/t/missing').string()}`);
  await c.put('/t/n').value(42).exec();
  out(`get /t/n number: ${await c.get('/t/n').number()}`);
  await c.put('/t/j').value(JSON.stringify({ a: [1, 2] })).exec();
  out(`get /t/j json: ${JSON.stringify(await c.get('/t/j').json())}`);
  out(`get /t/a at revision 2: ${await c.get('/t/a').revision(2).string()}`);
  out(`get /t/a serializable: ${await c.get('/t/a').serializable(true).string()}`);
  r = await c.put('/t/a').touch();
  out(`touch /t/a: revision=${r.header.revision}`);
  out(`get /t/a after touch: ${kv((await c.get('/t/a').exec()).kvs[0])}`);

  step('prefix, range and sort');
  for (const [k, v] of [['1', 'c'], ['2', 'a'], ['3', 'b']]) {
    await c.put(`/t/p/${k}`).value(v).exec();
  }
  await c.put('/t/p/2').value('a2').exec();
  for (const [target, order] of [
    ['Key', 'Ascend'],
    ['Key', 'Descend'],
    ['Value', 'Ascend'],
    ['Version', 'Descend'],
    ['Create', 'Descend'],
    ['Mod', 'Ascend'],
  ]) {
    const got = await c.getAll().prefix('/t/p/').sort(target, order).strings();
    out(`getAll prefix /t/p/ ${target} ${order}: ${JSON.stringify(got)}`);
  }
  out(`keys: ${JSON.stringify(await c.getAll().prefix('/t/p/').keys())}`);
  out(`count: ${await c.getAll().prefix('/t/p/').count()}`);
  r = await c.getAll().prefix('/t/p/').limit(2).exec();
  out(`limit 2: keys=${r.kvs.map(k => k.key.toString())} count=${r.count} more=${r.more}`);
  r = await c.getAll().prefix('/t/p/').minModRevision(10).exec();
  out(`minModRevision 10: ${r.kvs.map(k => k.key.toString())}`);
  r = await c.getAll().prefix('/t/p/').maxCreateRevision(10).exec();
  out(`maxCreateRevision 10: ${r.kvs.map(k => k.key.toString())}`);
  out(`all keys: ${JSON.stringify(await c.getAll().keys())}`);

  step('delete');
  const deleted = await c.delete().key('/t/n').getPrevious();
  out(`delete /t/n getPrevious: ${deleted.map(kv)}`);
  r = await c.delete().key('/t/n').exec();
  out(`delete /t/n again: deleted=${r.deleted} revision=${r.header.revision}`);
  r = await c.delete().prefix('/t/p/').exec();
  out(`delete prefix /t/p/: deleted=${r.deleted} revision=${r.header.revision}`);
  out(`count after: ${await c.getAll().prefix('/t/p/').count()}`);

  step('transactions');
  await c.put('/t/tx').value('one').exec();
  const mod = (await c.get('/t/tx').exec()).kvs[0].mod_revision;
  r = await c
    .if('/t/tx', 'Version', '==', 1)
    .and('/t/tx', 'Value', '==', 'one')
    .and('/t/tx', 'Mod', '==', Number(mod))
    .then(c.put('/t/tx').value('two'), c.get('/t/tx'), c.put('/t/tx2').value('x'))
    .else(c.put('/t/tx').value('failed'))
    .commit();
  out(`txn version==1 value==one mod==${mod}: succeeded=${r.succeeded} revision=${r.header.revision}`);
  out(`  responses: ${r.responses.map(x => x.response)}`);
  out(`  range: ${r.responses[1].response_range.kvs.map(kv)}`);
  r = await c
    .if('/t/tx', 'Value', '==', 'one')
    .then(c.put('/t/tx').value('never'))
    .else(c.get('/t/tx'), c.delete().key('/t/tx2'))
    .commit();
  out(`txn value==one (false): succeeded=${r.succeeded} revision=${r.header.revision}`);
  out(`  range: ${r.responses[0].response_range.kvs.map(kv)}`);
  out(`  deleted: ${r.responses[1].response_delete_range.deleted}`);
  r = await c
    .if('/t/none', 'Create', '==', 0)
    .and('/t/tx', 'Mod', '<', 1000)
    .and('/t/tx', 'Value', '!=', 'one')
    .then(c.put('/t/new').value('created'))
    .commit();
  out(`txn create==0 mod<1000 value!=one: succeeded=${r.succeeded}`);
  out(`get /t/new: ${kv((await c.get('/t/new').exec()).kvs[0])}`);
  await attempt('txn with a duplicate key', async () => {
    const t = await c.if('/t/x', 'Version', '==', 0).then(c.put('/t/d').value('1'), c.put('/t/d').value('2')).commit();
    return `succeeded=${t.succeeded}`;
  });
  await attempt('put an empty key', async () => (await c.put('').value('x').exec()).header.revision);

  step('watch a key');
  let w = await c.watch().key('/t/w').withPreviousKV().create();
  let evs = watchEvents(w, 3);
  await c.put('/t/w').value('w1').exec();
  await c.put('/t/w/under').value('not this key').exec();
  await c.put('/t/w').value('w2').exec();
  await c.delete().key('/t/w').exec();
  for (const line of await evs) out(line);
  await w.cancel();
  let q = quiet(w);
  await c.put('/t/w').value('after cancel').exec();
  out(`after cancel: ${await q}`);

  step('watch a prefix, only puts');
  w = await c.watch().prefix('/t/wp/').only('put').create();
  evs = watchEvents(w, 2);
  await c.put('/t/wp/1').value('a').exec();
  await c.put('/t/wpx').value('outside').exec();
  await c.delete().key('/t/wp/1').exec();
  await c.put('/t/wp/2').value('b').exec();
  for (const line of await evs) out(line);
  await w.cancel();

  step('watch from history');
  w = await c.watch().key('/t/a').startRevision('2').create();
  evs = watchEvents(w, 3);
  for (const line of await evs) out(`history ${line}`);
  await w.cancel();

  step('leases');
  let lease = c.lease(30, { autoKeepAlive: false });
  const id = await lease.grant();
  out(`lease granted: ${leaseName(id)}`);
  await lease.put('/t/l/1').value('leased').exec();
  await c.put('/t/l/2').value('leased').lease(id).exec();
  out(`get /t/l/1: ${kv((await c.get('/t/l/1').exec()).kvs[0])}`);
  r = await lease.keepaliveOnce();
  out(`keepaliveOnce: id=${leaseName(r.ID)} ttl=${r.TTL}`);
  const info = await c.leaseClient.leaseTimeToLive({ ID: id, keys: true });
  const ttl = Number(info.TTL);
  out(`timeToLive: id=${leaseName(info.ID)} granted=${info.grantedTTL} ttl in (25, 30]: ${ttl > 25 && ttl <= 30} keys=${info.keys.map(k => k.toString()).sort()}`);
  out(`leases: ${(await c.leaseClient.leaseLeases()).leases.map(l => leaseName(l.ID))}`);
  await lease.revoke();
  out(`revoked: ${lease.revoked()} get /t/l/1: ${await c.get('/t/l/1').string()} count /t/l/: ${await c.getAll().prefix('/t/l/').count()}`);
  await attempt('put with an unknown lease', async () => (await c.put('/t/l/3').value('x').lease('4660').exec()).header.revision);
  // Automatic keepalive over the LeaseKeepAlive stream: a 3 s lease outlives 5 s.
  lease = c.lease(3);
  const kept = collect(lease, 'keepaliveSucceeded', 2);
  await lease.put('/t/l/kept').value('alive').exec();
  const beats = await kept;
  out(`keepalives: ${beats.map(b => `${leaseName(b.ID)} ttl=${b.TTL}`).join(', ')}`);
  await sleep(1000);
  out(`key of a kept-alive lease after its TTL: ${await c.get('/t/l/kept').string()}`);
  await lease.revoke();
  out(`after revoke: ${await c.get('/t/l/kept').string()}`);
  // A lease the client stops keeping alive expires and takes its key.
  lease = c.lease(1, { autoKeepAlive: false });
  await lease.put('/t/l/short').value('expires').exec();
  const lost = collect(lease, 'lost', 1);
  let gone = false;
  for (let i = 0; i < 50 && !gone; i++) {
    gone = (await c.get('/t/l/short').string()) === null;
    if (!gone) await sleep(200);
  }
  out(`a 1 s lease's key is gone within 10 s: ${gone}`);
  await attempt('keepaliveOnce of the expired lease', async () => {
    const k = await lease.keepaliveOnce();
    return `ttl=${k.TTL}`;
  });
  lease.release();
  void lost.catch(() => {});

  step('locks');
  const a = c.lock('res').ttl(20);
  await a.acquire();
  out(`a acquired: leaseId set=${(await a.leaseId()) !== null}`);
  await attempt('b acquire while a holds', async () => {
    await c.lock('res').ttl(20).acquire();
    return 'acquired';
  });
  await a.release();
  const b = c.lock('res').ttl(20);
  await b.acquire();
  out(`b acquired after a released: ${(await c.getAll().prefix('res').count())} key(s)`);
  await b.release();
  out(`after release: ${await c.getAll().prefix('res').count()} key(s)`);
  out(`lock.do: ${await c.lock('res2').do(async () => `inside, keys ${await c.getAll().prefix('res2').count()}`)}`);
  out(`EtcdLockFailedError exported: ${typeof EtcdLockFailedError}`);

  step('election');
  const election = c.election('el', 5);
  const observer = await election.observe();
  out(`observer leader before: ${observer.leader()}`);
  const changes = collect(observer, 'change', 1);
  const first = election.campaign('candidate-1');
  await first.wait();
  out(`first elected, leader: ${await election.leader()}`);
  out(`observer change: ${await changes}`);
  const second = election.campaign('candidate-2');
  const elected2 = collect(second, 'elected', 1);
  await sleep(300);
  out(`leader while second waits: ${await election.leader()}`);
  const proclaimed = collect(observer, 'change', 1);
  await first.proclaim('candidate-1-proclaimed');
  out(`after proclaim: ${await election.leader()} observer: ${await proclaimed}`);
  const handedOver = collect(observer, 'change', 1);
  await first.resign();
  await elected2;
  out(`after first resigns: ${await election.leader()} observer: ${await handedOver}`);
  await second.resign();
  out(`after second resigns: ${await election.leader()}`);
  observer.cancel();

  step('members and status');
  const members = (await c.cluster.memberList({})).members;
  out(
    `members: ${members.length} name=${members[0].name} peer=${members[0].peerURLs.map(u => u.replace(/:\d+$/, ':PORT'))} ` +
      `client=${members[0].clientURLs.map(u => u.replace(/:\d+$/, ':PORT'))}`,
  );
  const status = await c.maintenance.status({});
  out(`status: version=${status.version} leader_is_member=${status.leader === members[0].ID} raftIndex_positive=${Number(status.raftIndex) > 0}`);
  out(`alarms: ${(await c.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' })).alarms.length}`);

  step('large and compressed messages');
  const big = Buffer.alloc(1 << 20, 'x');
  for (let i = 0; i < 3; i++) await c.put(`/t/big/${i}`).value(big).exec();
  // One 3 MiB answer: many HTTP/2 DATA frames, past the default flow-control windows.
  const bigs = await c.getAll().prefix('/t/big/').buffers();
  out(`getAll /t/big/: ${Object.entries(bigs).map(([k, v]) => `${k}=${v.length}:${v.equals(big)}`)}`);
  // The client counts ResourceExhausted as a failure of the host and opens its circuit
  // breaker: a client of its own.
  const huge = client();
  await attempt('put a 3 MiB value', async () => (await huge.put('/t/big/3').value(Buffer.concat([big, big, big])).exec()).header.revision);
  huge.close();
  await attempt('put just over --max-request-bytes', async () =>
    (await c.put('/t/big/3').value(Buffer.concat([big, Buffer.alloc(1 << 19, 'y')])).exec()).header.revision,
  );
  out(`delete /t/big/: ${(await c.delete().prefix('/t/big/').exec()).deleted}`);
  const gz = client({ grpcOptions: { 'grpc.default_compression_algorithm': 2 } });
  await attempt('put compressed with gzip', async () => (await gz.put('/t/gz').value('v'.repeat(100)).exec()).header.revision);
  gz.close();

  step('auth set up');
  await c.role('root').create();
  await c.user('root').create('rootpw');
  await c.user('root').addRole('root');
  const reader = await c.role('reader').create();
  await reader.grant({ permission: 'Read', range: c.range({ prefix: '/t/ro/' }) });
  await reader.grant({ permission: 'Readwrite', range: c.range({ prefix: '/t/rw/' }) });
  await c.user('alice').create('alicepw');
  await c.user('alice').addRole('reader');
  await c.put('/t/ro/1').value('readable').exec();
  out(`roles: ${(await c.getRoles()).map(x => x.name).sort()}`);
  out(`users: ${(await c.getUsers()).map(x => x.name).sort()}`);
  out(`alice roles: ${(await c.user('alice').roles()).map(x => x.name)}`);
  const perms = await reader.permissions();
  out(`reader permissions: ${perms.map(p => `${p.permission} ${p.range.start.toString()}..${p.range.end.toString()}`).sort()}`);
  await attempt('create alice again', async () => c.user('alice').create('x'));
  await attempt('grant a role that does not exist', async () => c.user('alice').addRole('nope'));
  await c.auth.authEnable({});
  out('auth enabled');

  step('auth in use');
  await attempt('anonymous get', async () => c.get('/t/ro/1').string());
  const alice = client({ auth: { username: 'alice', password: 'alicepw' } });
  out(`alice get /t/ro/1: ${await alice.get('/t/ro/1').string()}`);
  await attempt('alice put /t/ro/1', async () => (await alice.put('/t/ro/1').value('no').exec()).header.revision);
  await attempt('alice get /t/a', async () => alice.get('/t/a').string());
  r = await alice.put('/t/rw/1').value('mine').exec();
  out(`alice put /t/rw/1: revision=${r.header.revision}`);
  await attempt('alice delete prefix /t/', async () => (await alice.delete().prefix('/t/').exec()).deleted);
  await attempt('alice txn reading a denied key', async () =>
    (await alice.if('/t/a', 'Version', '>', 0).then(alice.get('/t/ro/1')).commit()).succeeded,
  );
  await attempt('alice watch /t/ro/', async () => {
    const aw = await alice.watch().prefix('/t/ro/').create();
    await aw.cancel();
    return 'created';
  });
  await attempt('alice watch /t/a (denied)', async () => {
    const aw = alice.watch().key('/t/a').watcher();
    const outcome = await Promise.race([
      new Promise(resolve => aw.once('connected', () => resolve('connected'))),
      new Promise(resolve => aw.once('error', err => resolve(errorLine(err)))),
      sleep(2000).then(() => 'neither connected nor failed in 2 s'),
    ]);
    out(`  outcome: ${outcome}`);
    const canceled = await Promise.race([aw.cancel().then(() => 'canceled', errorLine), sleep(2000).then(() => 'cancel pending after 2 s')]);
    return canceled;
  });
  await attempt('alice list users', async () => (await alice.getUsers()).length);
  alice.close();
  const wrong = client({ auth: { username: 'alice', password: 'wrong' } });
  await attempt('wrong password', async () => wrong.get('/t/ro/1').string());
  wrong.close();
  const root = client({ auth: { username: 'root', password: 'rootpw' } });
  out(`root get /t/rw/1: ${await root.get('/t/rw/1').string()}`);
  await root.auth.authDisable({});
  root.close();
  out(`after auth disable, anonymous get /t/ro/1: ${await c.get('/t/ro/1').string()}`);

  step('close');
  c.close();
  clearTimeout(watchdog);
  out('done');
}

main().then(
  () => process.exit(0),
  err => {
    console.log(`FAILED in step ${stepName}: ${errorLine(err)}`);
    console.error(err);
    process.exit(1);
  },
);
