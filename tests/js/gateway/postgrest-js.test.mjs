// The gateway driven by the real @supabase/postgrest-js client: select, filters,
// order, range, count, single/maybeSingle, embedding, insert, upsert, update,
// delete, rpc, csv and errors. Prints TAP; run by tests/integration/204_gateway_postgrest_js.t.
import assert from 'node:assert/strict'
import { PostgrestClient } from '@supabase/postgrest-js'

const url = process.env.PGPOD_URL
const anon = new PostgrestClient(url)
const user = new PostgrestClient(url, { headers: { Authorization: `Bearer ${process.env.GW_USER_TOKEN}` } })

const tests = []
const test = (name, fn) => tests.push([name, fn])
const ids = (data) => data.map((r) => r.id)
const ok = (res) => {
  if (res.error) throw new Error(`${res.status} ${JSON.stringify(res.error)}`)
  return res.data
}

test('select with order', async () => {
  const data = ok(await anon.from('gw_tasks').select('id,title').order('id'))
  assert.deepEqual(ids(data), [1, 2, 3, 4, 5])
})
test('eq / neq / gt / lte', async () => {
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').eq('id', 2))), [2])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').neq('id', 2).order('id'))), [1, 3, 4, 5])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').gt('id', 3).lte('id', 4))), [4])
})
test('in / like / ilike / is', async () => {
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').in('id', [1, 3, 7]).order('id'))), [1, 3])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').like('title', '%ui%'))), [2])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').ilike('title', 'DES%'))), [1])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').is('data', null).order('id'))), [3, 5])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').in('title', ['launch', 'a,b (c)']))), [3])
})
test('contains / overlaps / textSearch / json path filter', async () => {
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').contains('tags', ['b']).order('id'))), [1, 2])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').overlaps('tags', ['c', 'a']).order('id'))), [1, 4])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').textSearch('body', 'fox', { config: 'english' }))), [1])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').textSearch('body', 'quick review', { type: 'plain', config: 'english' }))), [4])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').eq('data->>size', '3'))), [1])
})
test('or / not / filter', async () => {
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').or('id.eq.1,id.eq.5').order('id'))), [1, 5])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').not('id', 'in', '(1,2,3)').order('id'))), [4, 5])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').filter('done', 'is', true).order('id'))), [1, 4])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').or('done.is.true,and(id.gt.2,id.lt.4)').order('id'))), [1, 3, 4])
})
test('order descending, limit, range', async () => {
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').order('id', { ascending: false }).limit(2))), [5, 4])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').order('id').range(1, 3))), [2, 3, 4])
  assert.deepEqual(ids(ok(await anon.from('gw_tasks').select('id').order('data->>size', { ascending: false, nullsFirst: false }).order('id'))), [2, 1, 4, 3, 5])
})
test('count exact, with and without head', async () => {
  const res = await anon.from('gw_tasks').select('id', { count: 'exact' }).range(0, 1)
  assert.equal(res.count, 5)
  assert.equal(res.data.length, 2)
  const head = await anon.from('gw_tasks').select('*', { count: 'exact', head: true })
  assert.equal(head.error, null)
  assert.equal(head.count, 5)
})
test('single and maybeSingle', async () => {
  assert.deepEqual(ok(await anon.from('gw_tasks').select('id,title').eq('id', 2).single()), { id: 2, title: 'build' })
  const many = await anon.from('gw_tasks').select('id').single()
  assert.equal(many.status, 406)
  assert.equal(many.error.code, 'PGRST116')
  const none = await anon.from('gw_tasks').select('id').eq('id', 999).maybeSingle()
  assert.equal(none.error, null)
  assert.equal(none.data, null)
})
test('embedding both ways', async () => {
  const t = ok(await anon.from('gw_tasks').select('id, project:gw_projects(name)').eq('id', 3).single())
  assert.deepEqual(t, { id: 3, project: { name: 'Gemini' } })
  const p = ok(await anon.from('gw_projects').select('name, gw_tasks(id)').eq('id', 1).order('id', { referencedTable: 'gw_tasks' }).single())
  assert.deepEqual(p, { name: 'Apollo', gw_tasks: [{ id: 1 }, { id: 2 }] })
})
test('insert with select', async () => {
  const data = ok(await user.from('gw_items').insert({ id: 40, name: 'js' }).select())
  assert.deepEqual(data, [{ id: 40, name: 'js', qty: 0 }])
  const bulk = ok(await user.from('gw_items').insert([{ id: 41, name: 'a' }, { id: 42, name: 'b' }]).select('id'))
  assert.deepEqual(ids(bulk), [41, 42])
  const minimal = await user.from('gw_items').insert({ id: 43, name: 'm' })
  assert.equal(minimal.status, 201)
  assert.equal(minimal.error, null)
})
test('insert conflict is an error with PostgreSQL\'s code', async () => {
  const res = await user.from('gw_items').insert({ id: 40, name: 'again' })
  assert.equal(res.status, 409)
  assert.equal(res.error.code, '23505')
})
test('upsert merge and ignore duplicates', async () => {
  const merged = ok(await user.from('gw_items').upsert({ id: 40, name: 'js2', qty: 4 }).select())
  assert.deepEqual(merged, [{ id: 40, name: 'js2', qty: 4 }])
  const ignored = ok(await user.from('gw_items').upsert([{ id: 40, name: 'no', qty: 0 }, { id: 44, name: 'new', qty: 0 }], { ignoreDuplicates: true }).select('id'))
  assert.deepEqual(ids(ignored), [44])
  const onConflict = ok(await user.from('gw_items').upsert({ id: 44, name: 'oc', qty: 1 }, { onConflict: 'id' }).select('name'))
  assert.deepEqual(onConflict, [{ name: 'oc' }])
})
test('update with filters', async () => {
  const data = ok(await user.from('gw_items').update({ qty: 3 }).in('id', [41, 42]).select('id,qty').order('id'))
  assert.deepEqual(data, [{ id: 41, qty: 3 }, { id: 42, qty: 3 }])
  const one = ok(await user.from('gw_items').update({ name: 'renamed' }).eq('id', 43).select().single())
  assert.equal(one.name, 'renamed')
})
test('delete with filters', async () => {
  const data = ok(await user.from('gw_items').delete().gte('id', 40).select('id').order('id'))
  assert.deepEqual(ids(data), [40, 41, 42, 43, 44])
  const left = ok(await anon.from('gw_items').select('id').gte('id', 40))
  assert.deepEqual(left, [])
})
test('rpc by POST and GET', async () => {
  assert.equal(ok(await anon.rpc('gw_add', { a: 1, b: 2 })), 3)
  assert.equal(ok(await anon.rpc('gw_add', { a: 5, b: 6 }, { get: true })), 11)
  const rows = ok(await anon.rpc('gw_tasks_of', { pid: 1 }).select('id').order('id', { ascending: false }))
  assert.deepEqual(ids(rows), [2, 1])
  const one = ok(await anon.rpc('gw_tasks_of', { pid: 2 }).eq('id', 3).single())
  assert.equal(one.title, 'launch')
  const missing = await anon.rpc('gw_add', { a: 1 })
  assert.equal(missing.status, 404)
  assert.equal(missing.error.code, 'PGRST202')
})
test('csv', async () => {
  const data = ok(await anon.from('gw_tasks').select('id,title').in('id', [1, 2]).order('id').csv())
  assert.equal(data, 'id,title\n1,design\n2,build')
})
test('errors carry PostgREST codes', async () => {
  const res = await anon.from('no_such_table').select()
  assert.equal(res.status, 404)
  assert.equal(res.error.code, 'PGRST205')
  const bad = await anon.from('gw_tasks').select('nope')
  assert.equal(bad.status, 400)
  assert.equal(bad.error.code, '42703')
})

let n = 0
let failed = 0
console.log(`1..${tests.length}`)
for (const [name, fn] of tests) {
  n++
  try {
    await fn()
    console.log(`ok ${n} - ${name}`)
  } catch (e) {
    failed++
    console.log(`not ok ${n} - ${name}`)
    for (const line of String(e.stack || e).split('\n')) console.log(`#   ${line}`)
  }
}
process.exit(failed ? 1 : 0)
