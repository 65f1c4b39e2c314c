-- Everything the pgpod extension defines, as text, in a stable order: member
-- objects with their definitions, the columns, defaults, constraints, indexes,
-- triggers, policies and privileges of its relations, and its settings defaults.
-- (pg_dump --schema-only prints only "CREATE EXTENSION" for extension members, so
-- comparing dumps would not see them.) Used by 030_migrations.t.
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pgpod'),
members AS (
  SELECT d.classid, d.objid FROM pg_depend d, ext
  WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (SELECT c.oid, c.oid::regclass::text AS name FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid)
SELECT line FROM (
  SELECT 'member ' || pg_describe_object(classid, objid, 0) AS line FROM members
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid) || E'\nacl ' || coalesce(p.proacl::text, '-')
  FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid WHERE p.prokind IN ('f', 'p', 'w')
  UNION ALL
  SELECT 'aggregate ' || p.oid::regprocedure FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid WHERE p.prokind = 'a'
  UNION ALL
  SELECT format('relation %s kind %s rls %s/%s options %s acl %s', r.name, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.reloptions, c.relacl)
  FROM rels r JOIN pg_class c ON c.oid = r.oid
  UNION ALL
  SELECT format('column %s.%s %s notnull %s default %s identity %s generated %s acl %s', r.name, a.attname,
                format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl)
  FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
  UNION ALL
  SELECT format('constraint %s %s %s', r.name, co.conname, pg_get_constraintdef(co.oid)) FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
  UNION ALL
  SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM rels r JOIN pg_index i ON i.indrelid = r.oid
  UNION ALL
  SELECT format('trigger %s %s', r.name, pg_get_triggerdef(t.oid)) FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
  UNION ALL
  SELECT format('policy %s %s %s %s using %s check %s', r.name, p.polname, p.polcmd, p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
  FROM rels r JOIN pg_policy p ON p.polrelid = r.oid
  UNION ALL
  SELECT format('view %s %s', r.name, pg_get_viewdef(r.oid)) FROM rels r JOIN pg_class c ON c.oid = r.oid AND c.relkind IN ('v', 'm')
  UNION ALL
  SELECT format('sequence %s %s %s %s %s', r.name, s.seqtypid::regtype, s.seqincrement, s.seqmin, s.seqmax) FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
  UNION ALL
  SELECT format('type %s %s', t.oid::regtype, t.typtype) || coalesce(' labels ' || (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid), '')
         || coalesce(' check ' || (SELECT string_agg(pg_get_constraintdef(co.oid), ' ' ORDER BY co.conname) FROM pg_constraint co WHERE co.contypid = t.oid), '')
  FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
  UNION ALL
  SELECT format('schema %s acl %s', n.nspname, n.nspacl) FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
  UNION ALL
  SELECT 'setting default ' || row_to_json(s)::text FROM pod.setting_defaults s
  UNION ALL
  SELECT 'job kind ' || row_to_json(k)::text FROM pod.job_kinds k
  UNION ALL
  SELECT 'extension config ' || unnest(extconfig)::regclass::text || ' ' || coalesce(array_to_string(extcondition, ' '), '') FROM pg_extension WHERE extname = 'pgpod'
) all_lines
ORDER BY line COLLATE "C";
