/* Unit tests of the SQL builder (gateway/sql_build.c) over a schema cache built
 * from literal catalog rows: values only ever appear as parameters, identifiers
 * are quoted, and PostgREST's gateway errors come with the right status. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "query_parse.h"
#include "schema.h"
#include "sql_build.h"
#include "tap.h"

static gw_schema *S;

static void
row(int n, ...)
{
	const char *v[12];
	va_list ap;
	va_start(ap, n);
	for (int i = 0; i < n; i++)
		v[i] = va_arg(ap, const char *);
	va_end(ap);
	gw_schema_add_row(S, n, v);
}

static void
make_schema(void)
{
	S = gw_schema_new();
	row(5, "rel", "tasks", "v", "28", "");
	row(5, "rel", "projects", "v", "28", "");
	row(5, "rel", "odd", "r", "28", "");
	row(6, "col", "tasks", "id", "integer", "0", "1");
	row(6, "col", "tasks", "project_id", "integer", "1", "0");
	row(6, "col", "tasks", "title", "text", "0", "0");
	row(6, "col", "tasks", "data", "jsonb", "1", "0");
	row(6, "col", "projects", "id", "integer", "0", "0");
	row(6, "col", "projects", "name", "text", "0", "0");
	row(6, "col", "odd", "a\"b", "text", "1", "0");
	row(5, "rel", "labels", "v", "28", "");
	row(5, "rel", "task_labels", "v", "28", "");
	row(6, "col", "labels", "id", "integer", "0", "0");
	row(6, "col", "task_labels", "task_id", "integer", "0", "0");
	row(6, "col", "task_labels", "label_id", "integer", "0", "0");
	row(6, "fk", "tl_task", "task_labels", "task_id", "tasks", "id");
	row(6, "fk", "tl_label", "task_labels", "label_id", "labels", "id");
	row(3, "pk", "tasks", "id");
	row(3, "pk", "projects", "id");
	row(6, "fk", "tasks_project_id_fkey", "tasks", "project_id", "projects", "id");
	row(8, "fn", "add", "100", "i", "0", "0", "0", "integer");
	row(5, "arg", "100", "a", "integer", "0");
	row(5, "arg", "100", "b", "integer", "1");
	row(8, "fn", "echo", "101", "i", "0", "0", "0", "json");
	row(5, "arg", "101", "", "json", "0");
	row(2, "role", "pgpod_user");
}

typedef struct built
{
	gw_plan plan;
	gw_error err;
	int rc;
} built;

static gw_arena A;

static int count_mode;
static int aggregates_on, missing_default, max_affected = -1;

static built *
build(int action, const char *target, const char *qs, const char *body, int resolution)
{
	built *b = calloc(1, sizeof *b);
	gw_query *q = gw_arena_alloc(&A, sizeof *q);
	gw_parse_error pe;
	if (gw_query_parse(&A, qs, strlen(qs), q, &pe))
	{
		b->rc = -2;
		return b;
	}
	gw_request_shape r = {.action = action,
	                      .target = target,
	                      .query = q,
	                      .range_offset = -1,
	                      .range_limit = -1,
	                      .body = body,
	                      .body_len = body ? strlen(body) : 0,
	                      .body_is_json = 1,
	                      .resolution = resolution,
	                      .rpc_get = action == GW_ACTION_RPC && !body,
	                      .count = count_mode,
	                      .aggregates = aggregates_on,
	                      .missing_default = missing_default,
	                      .max_affected_set = max_affected >= 0,
	                      .max_affected = max_affected};
	gw_plan_init(&b->plan);
	b->rc = gw_build(&A, S, &r, &b->plan, &b->err);
	return b;
}

static void
built_free(built *b)
{
	gw_plan_free(&b->plan);
	free(b);
}

static int
param_is(built *b, const char *value)
{
	for (int i = 0; i < b->plan.params.n; i++)
		if (b->plan.params.values[i] && !strcmp(b->plan.params.values[i], value))
			return i + 1;
	return 0;
}

static void
reads(void)
{
	built *b =
	    build(GW_ACTION_READ, "tasks", "select=id,title&title=eq.x&order=id.desc&limit=5", NULL, 0);
	ok(b->rc == 0, "simple read builds");
	contains(b->plan.sql.data, "FROM \"api\".\"tasks\" AS \"tasks\"",
	         "relation is quoted and qualified");
	char want[64];
	snprintf(want, sizeof want, "\"tasks\".\"title\" = $%d", param_is(b, "x"));
	contains(b->plan.sql.data, want, "filter value is a parameter");
	contains(b->plan.sql.data, "ORDER BY \"tasks\".\"id\" DESC", "order");
	contains(b->plan.sql.data, "json_agg(_postgrest_t)", "JSON built in SQL");
	ok(b->plan.read_only, "reads are read-only");
	built_free(b);

	const char *evil = "';DROP TABLE x;--";
	char qs[200];
	snprintf(qs, sizeof qs, "title=eq.%s&or=(title.like.*%s,id.in.(1,%s))",
	         "%27%3BDROP%20TABLE%20x%3B--", "DROP", "DROP");
	b = build(GW_ACTION_READ, "tasks", qs, NULL, 0);
	ok(b->rc == 0 && !strstr(b->plan.sql.data, "DROP"),
	   "hostile filter values never reach the SQL text");
	ok(param_is(b, evil) > 0, "the hostile value travels as a parameter");
	ok(param_is(b, "{\"1\",\"DROP\"}") > 0, "in list is one array parameter");
	built_free(b);

	count_mode = GW_COUNT_EXACT;
	b = build(GW_ACTION_READ, "tasks", "title=eq.x", NULL, 0);
	contains(b->plan.sql.data,
	         "(SELECT pg_catalog.count(*) FROM \"api\".\"tasks\" AS \"tasks\" WHERE",
	         "count=exact counts with the same filters");
	built_free(b);
	count_mode = GW_COUNT_PLANNED;
	b = build(GW_ACTION_READ, "tasks", "title=eq.x", NULL, 0);
	contains(b->plan.count_sql.data, "EXPLAIN (FORMAT JSON) SELECT 1 FROM \"api\".\"tasks\"",
	         "count=planned explains");
	ok(b->plan.count_params.n == 1 && !strcmp(b->plan.count_params.values[0], "x"),
	   "... with its own parameters");
	built_free(b);
	count_mode = GW_COUNT_NONE;
	b = build(GW_ACTION_READ, "tasks", "select=id;drop%20table%20x", NULL, 0);
	ok(b->rc == -1 && b->err.status == 400 && !strcmp(b->err.code, "42703"),
	   "unknown (hostile) column: 400 42703");
	built_free(b);
	b = build(GW_ACTION_READ, "tasks", "order=id;drop", NULL, 0);
	ok(b->rc == -1 && b->err.status == 400, "hostile order column refused");
	built_free(b);
	b = build(GW_ACTION_READ, "odd", "select=a\"b", NULL, 0);
	ok(b->rc == 0 && strstr(b->plan.sql.data, "\"odd\".\"a\"\"b\""),
	   "a quote inside a bare name is doubled");
	built_free(b);
	b = build(GW_ACTION_READ, "odd", "select=%22a%5C%22b%22", NULL, 0);
	ok(b->rc == 0, "quoted name with an escaped quote");
	contains(b->plan.sql.data, "\"odd\".\"a\"\"b\"", "quotes inside identifiers are doubled");
	built_free(b);

	b = build(GW_ACTION_READ, "tasks", "select=id,data->who->>name,n:data->size::int", NULL, 0);
	ok(b->rc == 0, "json paths and casts build");
	contains(b->plan.sql.data, "CAST(\"tasks\".\"data\"->$", "cast around json path");
	contains(b->plan.sql.data, "AS int) AS \"n\"", "cast type and alias");
	contains(b->plan.sql.data, "AS \"name\"", "json path output name is the last key");
	ok(param_is(b, "who") && param_is(b, "name"), "json keys are parameters");
	built_free(b);

	b = build(GW_ACTION_READ, "tasks", "select=id,p:projects(name)&p.name=eq.z", NULL, 0);
	ok(b->rc == 0, "many-to-one embed builds");
	contains(b->plan.sql.data, "row_to_json", "to-one embed is an object");
	contains(b->plan.sql.data, "\"pgrst_1\".\"id\" = \"tasks\".\"project_id\"",
	         "join through the foreign key");
	built_free(b);
	b = build(GW_ACTION_READ, "projects",
	          "select=name,tasks!inner(title)&tasks.done=is.true&tasks.limit=1", NULL, 0);
	ok(b->rc == -1 && !strcmp(b->err.code, "42703"), "embedded filter on a missing column fails");
	built_free(b);
	b = build(GW_ACTION_READ, "projects",
	          "select=name,tasks!inner(title)&tasks.title=like.a*&tasks.limit=1", NULL, 0);
	ok(b->rc == 0, "one-to-many embed with !inner builds");
	contains(b->plan.sql.data, "json_agg", "to-many embed is an array");
	contains(b->plan.sql.data, "EXISTS (SELECT 1 FROM \"api\".\"tasks\"", "!inner filters parents");
	built_free(b);
	b = build(GW_ACTION_READ, "tasks", "select=id,labels(id)", NULL, 0);
	ok(b->rc == 0, "many-to-many embed builds");
	contains(b->plan.sql.data,
	         "JOIN \"api\".\"task_labels\" AS \"pgrst_1_j\" ON \"pgrst_1_j\".\"label_id\" = "
	         "\"pgrst_1\".\"id\"",
	         "junction joined to the target");
	contains(b->plan.sql.data, "\"pgrst_1_j\".\"task_id\" = \"tasks\".\"id\"",
	         "junction tied to the parent");
	built_free(b);
	b = build(GW_ACTION_READ, "tasks", "select=id,task_labels(label_id)", NULL, 0);
	ok(b->rc == 0 && !strstr(b->plan.sql.data, "_j\""), "a direct key wins over junctions");
	built_free(b);
	b = build(GW_ACTION_READ, "tasks", "select=id,odd(*)", NULL, 0);
	ok(b->rc == -1 && b->err.status == 400 && !strcmp(b->err.code, "PGRST200"),
	   "no relationship: 400 PGRST200");
	built_free(b);
	b = build(GW_ACTION_READ, "nope", "", NULL, 0);
	ok(b->rc == -1 && b->err.status == 404 && !strcmp(b->err.code, "PGRST205"),
	   "unknown relation: 404 PGRST205");
	built_free(b);
}

static void
writes(void)
{
	built *b = build(GW_ACTION_INSERT, "tasks", "", "[{\"title\":\"a\"},{\"title\":\"b\"}]", 0);
	ok(b->rc == 0, "bulk insert builds");
	contains(b->plan.sql.data, "INSERT INTO \"api\".\"tasks\" AS \"tasks\" (\"title\")",
	         "insert columns from the body");
	contains(b->plan.sql.data, "json_populate_recordset", "rows come from the JSON parameter");
	ok(!b->plan.read_only, "writes are read-write");
	built_free(b);
	b = build(GW_ACTION_INSERT, "tasks", "", "[{\"title\":\"a\"},{\"id\":1}]", 0);
	ok(b->rc == -1 && !strcmp(b->err.code, "PGRST102"), "keys must match: PGRST102");
	built_free(b);
	b = build(GW_ACTION_INSERT, "tasks", "", "{\"nope\":1}", 0);
	ok(b->rc == -1 && !strcmp(b->err.code, "PGRST204"), "unknown column in body: PGRST204");
	built_free(b);
	b = build(GW_ACTION_INSERT, "tasks", "", "{bad json", 0);
	ok(b->rc == -1 && b->err.status == 400 && !strcmp(b->err.code, "PGRST102"),
	   "invalid JSON: 400 PGRST102");
	built_free(b);
	b = build(GW_ACTION_INSERT, "tasks", "", "{\"id\":1,\"title\":\"t\"}", GW_RESOLUTION_MERGE);
	ok(b->rc == 0, "upsert builds");
	contains(b->plan.sql.data,
	         "ON CONFLICT (\"id\") DO UPDATE SET \"id\" = EXCLUDED.\"id\", \"title\" = "
	         "EXCLUDED.\"title\"",
	         "merge-duplicates on the primary key");
	built_free(b);
	b = build(GW_ACTION_INSERT, "tasks", "on_conflict=title", "{\"title\":\"t\"}",
	          GW_RESOLUTION_IGNORE);
	contains(b->plan.sql.data, "ON CONFLICT (\"title\") DO NOTHING",
	         "ignore-duplicates with on_conflict");
	built_free(b);
	b = build(GW_ACTION_UPDATE, "tasks", "id=eq.3", "{\"title\":\"new\"}", 0);
	ok(b->rc == 0, "update builds");
	contains(b->plan.sql.data,
	         "UPDATE \"api\".\"tasks\" AS \"tasks\" SET \"title\" = pgrst_body.\"title\"",
	         "update set list");
	built_free(b);
	b = build(GW_ACTION_DELETE, "tasks", "id=in.(1,2)", NULL, 0);
	ok(b->rc == 0, "delete builds");
	contains(b->plan.sql.data, "DELETE FROM \"api\".\"tasks\" AS \"tasks\" WHERE",
	         "delete with filters");
	built_free(b);
	b = build(GW_ACTION_UPSERT_PUT, "tasks", "title=eq.x", "{\"id\":1}", 0);
	ok(b->rc == -1 && b->err.status == 405 && !strcmp(b->err.code, "PGRST105"),
	   "PUT without pk filter: 405");
	built_free(b);
	b = build(GW_ACTION_UPSERT_PUT, "tasks", "id=eq.2", "{\"id\":1,\"title\":\"x\"}", 0);
	ok(b->rc == -1 && !strcmp(b->err.code, "PGRST115"), "PUT with a mismatched body: PGRST115");
	built_free(b);
	b = build(GW_ACTION_UPSERT_PUT, "tasks", "id=eq.1", "{\"id\":1,\"title\":\"x\"}", 0);
	ok(b->rc == 0, "PUT builds");
	contains(b->plan.sql.data, "ON CONFLICT (\"id\") DO UPDATE", "PUT is an upsert");
	built_free(b);
}

static void
rpc(void)
{
	built *b = build(GW_ACTION_RPC, "add", "a=1&b=2", NULL, 0);
	ok(b->rc == 0, "rpc by GET builds");
	contains(b->plan.sql.data,
	         "json_to_record($1::json) AS pgrst_args(\"a\" integer, \"b\" integer)",
	         "arguments typed from the catalog");
	contains(b->plan.sql.data,
	         "\"api\".\"add\"(\"a\" := pgrst_args.\"a\", \"b\" := pgrst_args.\"b\")", "named call");
	ok(param_is(b, "{\"a\":\"1\",\"b\":\"2\"}") > 0, "arguments travel as one JSON parameter");
	ok(b->plan.rpc_scalar && b->plan.read_only, "scalar function, read-only by GET");
	built_free(b);
	b = build(GW_ACTION_RPC, "add", "b=2", NULL, 0);
	ok(b->rc == -1 && b->err.status == 404 && !strcmp(b->err.code, "PGRST202"),
	   "missing argument: 404 PGRST202");
	built_free(b);
	b = build(GW_ACTION_RPC, "echo", "", "{\"x\":[1,2]}", 0);
	ok(b->rc == 0, "single unnamed json parameter builds");
	contains(b->plan.sql.data, "\"api\".\"echo\"($1::json)", "raw body is the one argument");
	ok(param_is(b, "{\"x\":[1,2]}") == 1, "raw body unchanged");
	built_free(b);
	b = build(GW_ACTION_RPC, "nothere", "", "{}", 0);
	ok(b->rc == -1 && b->err.status == 404, "unknown function: 404");
	built_free(b);
}

static void
aggregates_and_prefs(void)
{
	built *b = build(GW_ACTION_READ, "tasks", "select=id.sum()", NULL, 0);
	ok(b->rc == -1 && b->err.status == 400 && !strcmp(b->err.code, "PGRST123"),
	   "aggregates disabled: 400 PGRST123");
	built_free(b);
	aggregates_on = 1;
	b = build(GW_ACTION_READ, "tasks", "select=project_id,c:count(),t:id.sum()::text&order=project_id",
	          NULL, 0);
	ok(b->rc == 0, "aggregates with a group column build");
	contains(b->plan.sql.data, "pg_catalog.count(*) AS \"c\"", "count() counts rows");
	contains(b->plan.sql.data, "CAST(pg_catalog.sum(\"tasks\".\"id\") AS text) AS \"t\"",
	         "cast after the aggregate");
	contains(b->plan.sql.data, " GROUP BY 1 ORDER BY", "grouped by the other column's position");
	built_free(b);
	b = build(GW_ACTION_READ, "tasks", "select=nope.max()", NULL, 0);
	ok(b->rc == -1 && b->err.status == 400, "aggregate of an unknown column: 400");
	built_free(b);
	b = build(GW_ACTION_READ, "tasks", "select=*,count()", NULL, 0);
	contains(b->plan.sql.data, " GROUP BY 1, 2, 3, 4)", "* with an aggregate groups by every column");
	built_free(b);
	aggregates_on = 0;

	missing_default = 1;
	b = build(GW_ACTION_INSERT, "tasks", "columns=id,title",
	          "[{\"title\":\"a\"},{\"id\":2,\"title\":\"b\"}]", 0);
	ok(b->rc == 0, "missing=default insert builds");
	contains(b->plan.sql.data, "VALUES (DEFAULT, (pg_catalog.json_populate_record(",
	         "a missing key is DEFAULT");
	ok(param_is(b, "{\"title\":\"a\"}") && param_is(b, "{\"id\":2,\"title\":\"b\"}"),
	   "each row is its own bound parameter");
	built_free(b);
	b = build(GW_ACTION_UPDATE, "tasks", "columns=title,data&id=eq.1", "{\"title\":\"x\"}", 0);
	contains(b->plan.sql.data, "\"data\" = DEFAULT", "PATCH: a listed column missing from the body is DEFAULT");
	built_free(b);
	missing_default = 0;

	max_affected = 3;
	b = build(GW_ACTION_DELETE, "tasks", "id=gt.1", NULL, 0);
	contains(b->plan.sql.data, "'pgrst_max_affected:'", "max-affected checks the count");
	ok(param_is(b, "3") > 0, "the limit is a bound parameter");
	built_free(b);
	max_affected = -1;
}

TAP_TEST(test_sql_build)
{
	gw_arena_init(&A);
	make_schema();
	reads();
	writes();
	rpc();
	aggregates_and_prefs();
	gw_schema_unref(S);
	gw_arena_free(&A);
}
