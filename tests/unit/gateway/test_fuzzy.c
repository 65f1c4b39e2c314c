/* Unit tests of the fuzzy hints (gateway/fuzzy.c), on the examples of PostgREST's
 * own documentation tests for its hints. */
#include "fuzzy.h"
#include "tap.h"

TAP_TEST(test_fuzzy)
{
	const char *procs[] = {"test", "another"};
	ok(gw_fuzzy_best("testt", procs, 2, GW_FUZZY_MIN) == 0, "testt: test");
	ok(gw_fuzzy_best("noclosealternative", procs, 2, GW_FUZZY_MIN) == -1, "nothing close: none");
	const char *params[] = {"(name, param, val)", "(attr, id)"};
	ok(gw_fuzzy_best("(nam, pqaram, vall)", params, 2, GW_FUZZY_MIN) == 0, "misspelt parameters");
	ok(gw_fuzzy_best("(param, val)", params, 2, GW_FUZZY_MIN) == 0, "missing parameter");
	ok(gw_fuzzy_best("(attrs, id)", params, 2, GW_FUZZY_MIN) == 1, "(attrs, id): (attr, id)");
	ok(gw_fuzzy_best("(id)", params, 2, GW_FUZZY_MIN) == 1, "(id): (attr, id)");
	ok(gw_fuzzy_best("(noclosealternative)", params, 2, GW_FUZZY_MIN) == -1, "no close parameters");
	const char *rels[] = {"directors", "roles", "actors"};
	ok(gw_fuzzy_best("role", rels, 3, GW_FUZZY_MIN) == 1, "role: roles");
	const char *tables[] = {"gw_items", "gw_tasks", "gw_projects"};
	ok(gw_fuzzy_best("gw_item", tables, 3, GW_FUZZY_MIN_TABLE) == 0, "gw_item: gw_items");
	ok(gw_fuzzy_best("projects", tables, 3, GW_FUZZY_MIN) == 2, "projects: gw_projects");
	ok(gw_fuzzy_best("projects", tables, 3, GW_FUZZY_MIN_TABLE) == -1, "... not close enough for a table");
	ok(gw_fuzzy_best("zzzz", tables, 3, GW_FUZZY_MIN_TABLE) == -1, "zzzz: none");
	ok(gw_fuzzy_best("x", tables, 0, GW_FUZZY_MIN) == -1, "no candidates: none");
	ok(gw_fuzzy_best("", tables, 3, GW_FUZZY_MIN) == -1, "empty name: none");
}
