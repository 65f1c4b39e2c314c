/*
 * pubsub_parse.c — the parsers of the pubsub cache, registered by name, each XML →
 * JSONB: "atom" (an Atom entry, the XEP-0277 microblog profile) and "video" (the same
 * plus the Media RSS fields PeerTube's feeds carry and pgpod's own video fields; it
 * reads RSS 2.0 items too). Input goes through pubsub_xml_read (no DTD, no network,
 * size and depth limits). Values are collected first, then emitted, so that a key
 * appears once; dates are normalised to ISO 8601 UTC, numbers checked.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "pubsub.h"

PG_FUNCTION_INFO_V1(pubsub_parse);
PG_FUNCTION_INFO_V1(pubsub_parser_known);
PG_FUNCTION_INFO_V1(pubsub_parsers);

/* --- what an entry says ----------------------------------------------------------- */

typedef struct link_field
{
	char *rel, *href, *type, *title, *length;
} link_field;

typedef struct category_field
{
	char *term, *label, *scheme;
} category_field;

typedef struct reply_field
{
	char *ref, *href;
} reply_field;

typedef struct file_field
{
	char *url, *type, *medium, *height, *width, *size, *fps, *duration, *bitrate;
} file_field;

typedef struct thumb_field
{
	char *url, *width, *height;
} thumb_field;

typedef struct entry_fields
{
	const char *format; /* "atom" or "rss" */
	char *id, *title, *summary, *content, *content_xhtml, *link;
	char *author_name, *author_uri, *author_email;
	char *published, *updated, *comments;
	List *links, *categories, *replies;
	/* video */
	char *uuid, *origin, *duration, *magnet, *player, *embed, *views;
	List *torrents, *files, *thumbnails, *keywords;
} entry_fields;

typedef void (*parser_fn)(xmlNodePtr root, entry_fields *e);

/* --- reading the tree --------------------------------------------------------------- */

static char *
take(xmlChar *s)
{
	char *r;

	if (s == NULL)
		return NULL;
	r = pstrdup((char *)s);
	xmlFree(s);
	return r;
}

/* An attribute's value by name, as xmlGetProp gives it ("" when empty), copied once:
 * a value that is one text node (nearly all) straight from the tree. */
static char *
attr(xmlNodePtr n, const char *name)
{
	for (xmlAttrPtr a = n->properties; a; a = a->next)
		if (strcmp((const char *)a->name, name) == 0)
		{
			xmlNodePtr t = a->children;

			if (t == NULL)
				return pstrdup("");
			if (t->next == NULL && (t->type == XML_TEXT_NODE || t->type == XML_CDATA_SECTION_NODE))
				return pstrdup(t->content ? (const char *)t->content : "");
			return take(xmlGetProp(n, BAD_CAST name));
		}
	return NULL;
}

/* The text of an element, trimmed; NULL when empty. (One text child, the usual case,
 * is copied from the tree; otherwise libxml2 gathers the text of the descendants.) */
static char *
text_of(xmlNodePtr n)
{
	xmlNodePtr t = n->children;
	char *s;
	char *end;

	if (t == NULL)
		return NULL;
	if (t->next == NULL && t->type == XML_TEXT_NODE)
		s = pstrdup(t->content ? (const char *)t->content : "");
	else
		s = take(xmlNodeGetContent(n));

	if (s == NULL)
		return NULL;
	while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\r' || end[-1] == '\t'))
		end--;
	*end = '\0';
	return *s ? s : NULL;
}

/* The children of an element serialised (an xhtml content's div). */
static char *
inner_xml(xmlNodePtr n)
{
	xmlBufferPtr buf = xmlBufferCreate();
	char *r;

	if (buf == NULL)
		elog(ERROR, "out of memory serialising XML");
	for (xmlNodePtr c = n->children; c; c = c->next)
		xmlNodeDump(buf, n->doc, c, 0, 0);
	r = pnstrdup((const char *)xmlBufferContent(buf), xmlBufferLength(buf));
	xmlBufferFree(buf);
	return r;
}

/* A date as ISO 8601 in UTC (RFC 3339 of Atom, RFC 822 of RSS); NULL if not a date. */
static char *
iso_date(const char *s)
{
	char workbuf[MAXDATELEN + 1];
	char *field[MAXDATEFIELDS];
	int ftype[MAXDATEFIELDS];
	int nf, dtype, tz = 0;
	struct pg_tm tm;
	fsec_t fsec;
	TimestampTz ts;
	char out[MAXDATELEN + 1];
	const int utc = 0;

	if (s == NULL || strlen(s) >= MAXDATELEN)
		return NULL;
	if (ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) != 0 ||
	    DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz) != 0 || dtype != DTK_DATE ||
	    tm2timestamp(&tm, fsec, &tz, &ts) != 0 || !IS_VALID_TIMESTAMP(ts))
		return NULL;
	JsonEncodeDateTime(out, TimestampTzGetDatum(ts), TIMESTAMPTZOID, &utc);
	return pstrdup(out);
}

/* A non-negative finite number, or NULL. */
static char *
number(char *s)
{
	char *end;
	double d;

	if (s == NULL)
		return NULL;
	d = strtod(s, &end);
	if (end == s || *end != '\0' || !isfinite(d) || d < 0)
		return NULL;
	return s;
}

/* Atom's author, RSS's "email (name)" author or dc:creator. */
static void
read_person(xmlNodePtr n, entry_fields *e)
{
	for (xmlNodePtr c = n->children; c; c = c->next)
		if (pubsub_xml_is(c, NS_ATOM, "name"))
			e->author_name = text_of(c);
		else if (pubsub_xml_is(c, NS_ATOM, "uri"))
			e->author_uri = text_of(c);
		else if (pubsub_xml_is(c, NS_ATOM, "email"))
			e->author_email = text_of(c);
}

static void
read_rss_author(xmlNodePtr n, entry_fields *e)
{
	char *s = text_of(n);
	char *open;

	if (s == NULL)
		return;
	open = strchr(s, '(');
	if (open && s[strlen(s) - 1] == ')')
	{
		char *end = open;

		s[strlen(s) - 1] = '\0';
		e->author_name = pstrdup(open + 1);
		while (end > s && end[-1] == ' ')
			end--;
		*end = '\0';
		e->author_email = s;
	}
	else
		e->author_email = s;
}

/* The Atom (RFC 4287 / XEP-0277) elements of an entry. */
static void
read_atom(xmlNodePtr root, entry_fields *e)
{
	e->format = "atom";
	for (xmlNodePtr c = root->children; c; c = c->next)
	{
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (pubsub_xml_is(c, NS_ATOM, "id"))
			e->id = text_of(c);
		else if (pubsub_xml_is(c, NS_ATOM, "title"))
			e->title = text_of(c);
		else if (pubsub_xml_is(c, NS_ATOM, "summary"))
			e->summary = text_of(c);
		else if (pubsub_xml_is(c, NS_ATOM, "content"))
		{
			char *type = attr(c, "type");

			if (type && strcmp(type, "xhtml") == 0)
			{
				e->content_xhtml = inner_xml(c);
				if (e->content == NULL)
					e->content = text_of(c);
			}
			else
				e->content = text_of(c);
		}
		else if (pubsub_xml_is(c, NS_ATOM, "author"))
			read_person(c, e);
		else if (pubsub_xml_is(c, NS_ATOM, "published"))
			e->published = iso_date(text_of(c));
		else if (pubsub_xml_is(c, NS_ATOM, "updated"))
			e->updated = iso_date(text_of(c));
		else if (pubsub_xml_is(c, NS_ATOM, "link"))
		{
			link_field *l = palloc0(sizeof(*l));

			l->rel = attr(c, "rel");
			l->href = attr(c, "href");
			l->type = attr(c, "type");
			l->title = attr(c, "title");
			l->length = number(attr(c, "length"));
			if (l->href == NULL)
				continue;
			e->links = lappend(e->links, l);
			if ((l->rel == NULL || strcmp(l->rel, "alternate") == 0) && e->link == NULL)
				e->link = l->href;
			/* XEP-0277: the comments node is a link rel=replies title=comments */
			if (l->rel && strcmp(l->rel, "replies") == 0 && l->title && strcmp(l->title, "comments") == 0)
				e->comments = l->href;
		}
		else if (pubsub_xml_is(c, NS_ATOM, "category"))
		{
			category_field *k = palloc0(sizeof(*k));

			k->term = attr(c, "term");
			k->label = attr(c, "label");
			k->scheme = attr(c, "scheme");
			if (k->term)
				e->categories = lappend(e->categories, k);
		}
		else if (pubsub_xml_is(c, NS_THREAD, "in-reply-to"))
		{
			reply_field *r = palloc0(sizeof(*r));

			r->ref = attr(c, "ref");
			r->href = attr(c, "href");
			if (r->ref)
				e->replies = lappend(e->replies, r);
		}
	}
	if (e->published == NULL)
		e->published = e->updated;
}

/* The RSS 2.0 elements of an item. */
static void
read_rss(xmlNodePtr root, entry_fields *e)
{
	e->format = "rss";
	for (xmlNodePtr c = root->children; c; c = c->next)
	{
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (pubsub_xml_is(c, NULL, "guid"))
			e->id = text_of(c);
		else if (pubsub_xml_is(c, NULL, "title"))
			e->title = text_of(c);
		else if (pubsub_xml_is(c, NULL, "link"))
			e->link = text_of(c);
		else if (pubsub_xml_is(c, NULL, "description"))
			e->summary = text_of(c);
		else if (pubsub_xml_is(c, NS_CONTENT, "encoded"))
			e->content = text_of(c);
		else if (pubsub_xml_is(c, NULL, "pubDate"))
			e->published = iso_date(text_of(c));
		else if (pubsub_xml_is(c, NULL, "author"))
			read_rss_author(c, e);
		else if (pubsub_xml_is(c, NS_DC, "creator"))
			e->author_name = text_of(c);
		else if (pubsub_xml_is(c, NULL, "comments"))
			e->comments = text_of(c);
		else if (pubsub_xml_is(c, NULL, "category"))
		{
			category_field *k = palloc0(sizeof(*k));

			k->term = text_of(c);
			k->scheme = attr(c, "domain");
			if (k->term)
				e->categories = lappend(e->categories, k);
		}
		else if (pubsub_xml_is(c, NULL, "enclosure"))
		{
			link_field *l = palloc0(sizeof(*l));

			l->rel = pstrdup("enclosure");
			l->href = attr(c, "url");
			l->type = attr(c, "type");
			l->length = number(attr(c, "length"));
			if (l->href)
				e->links = lappend(e->links, l);
		}
	}
	if (e->id == NULL)
		e->id = e->link;
	if (e->link)
	{
		link_field *l = palloc0(sizeof(*l));

		l->rel = pstrdup("alternate");
		l->href = e->link;
		e->links = lcons(l, e->links);
	}
	e->updated = e->published;
}

/* Media RSS (and pgpod's) video elements, at the entry's level or in a media:group. */
static void
read_media(xmlNodePtr parent, entry_fields *e)
{
	for (xmlNodePtr c = parent->children; c; c = c->next)
	{
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (pubsub_xml_is(c, NS_MRSS, "group"))
			read_media(c, e);
		else if (pubsub_xml_is(c, NS_MRSS, "content"))
		{
			file_field *f = palloc0(sizeof(*f));

			f->url = attr(c, "url");
			f->type = attr(c, "type");
			f->medium = attr(c, "medium");
			f->height = number(attr(c, "height"));
			f->width = number(attr(c, "width"));
			f->size = number(attr(c, "fileSize"));
			f->fps = number(attr(c, "framerate"));
			f->duration = number(attr(c, "duration"));
			f->bitrate = number(attr(c, "bitrate"));
			if (f->url == NULL)
				continue;
			e->files = lappend(e->files, f);
			if (e->duration == NULL)
				e->duration = f->duration;
		}
		else if (pubsub_xml_is(c, NS_MRSS, "peerLink"))
		{
			char *href = attr(c, "href");

			if (href && strncmp(href, "magnet:", 7) == 0)
			{
				if (e->magnet == NULL)
					e->magnet = href;
			}
			else if (href)
				e->torrents = lappend(e->torrents, href);
		}
		else if (pubsub_xml_is(c, NS_MRSS, "thumbnail"))
		{
			thumb_field *t = palloc0(sizeof(*t));

			t->url = attr(c, "url");
			t->width = number(attr(c, "width"));
			t->height = number(attr(c, "height"));
			if (t->url)
				e->thumbnails = lappend(e->thumbnails, t);
		}
		else if (pubsub_xml_is(c, NS_MRSS, "player"))
			e->player = attr(c, "url");
		else if (pubsub_xml_is(c, NS_MRSS, "embed"))
			e->embed = attr(c, "url");
		else if (pubsub_xml_is(c, NS_MRSS, "description") && e->summary == NULL)
			e->summary = text_of(c);
		else if (pubsub_xml_is(c, NS_MRSS, "title") && e->title == NULL)
			e->title = text_of(c);
		else if (pubsub_xml_is(c, NS_MRSS, "community"))
		{
			for (xmlNodePtr s = c->children; s; s = s->next)
				if (pubsub_xml_is(s, NS_MRSS, "statistics"))
					e->views = number(attr(s, "views"));
		}
		else if (pubsub_xml_is(c, NS_MRSS, "keywords"))
		{
			char *s = text_of(c);
			char *save = NULL;

			for (char *k = s ? strtok_r(s, ",", &save) : NULL; k; k = strtok_r(NULL, ",", &save))
			{
				while (*k == ' ')
					k++;
				if (*k)
					e->keywords = lappend(e->keywords, k);
			}
		}
		else if (pubsub_xml_is(c, NS_PGPOD, "uuid"))
			e->uuid = text_of(c);
		else if (pubsub_xml_is(c, NS_PGPOD, "origin"))
			e->origin = text_of(c);
		else if (pubsub_xml_is(c, NS_PGPOD, "duration"))
			e->duration = number(text_of(c));
		else if (pubsub_xml_is(c, NS_PGPOD, "magnet"))
			e->magnet = text_of(c);
	}
}

static void
parse_entry(xmlNodePtr root, entry_fields *e)
{
	if (pubsub_xml_is(root, NS_ATOM, "entry"))
		read_atom(root, e);
	else if (pubsub_xml_is(root, NULL, "item"))
		read_rss(root, e);
	else
		ereport(ERROR, (errcode(ERRCODE_INVALID_XML_CONTENT),
		                errmsg("payload is neither an Atom entry nor an RSS item"),
		                errdetail("Its root element is <%s>.", (const char *)root->name)));
}

static void
parse_atom(xmlNodePtr root, entry_fields *e)
{
	if (!pubsub_xml_is(root, NS_ATOM, "entry"))
		ereport(ERROR, (errcode(ERRCODE_INVALID_XML_CONTENT),
		                errmsg("payload is not an Atom entry"),
		                errdetail("Its root element is <%s>.", (const char *)root->name)));
	read_atom(root, e);
}

static void
parse_video(xmlNodePtr root, entry_fields *e)
{
	parse_entry(root, e);
	read_media(root, e);
}

/* --- the registry -------------------------------------------------------------------- */

typedef struct parser_entry
{
	const char *name;
	parser_fn fn;
	const char *description;
} parser_entry;

/* Reads nothing: the "namespace" parser only names the root element (emit). */
static void
parse_root_only(xmlNodePtr root, entry_fields *e)
{
}

static const parser_entry parsers[] = {
    {"namespace", parse_root_only, "only the root element's name and namespace (checks the payload is safe, well-formed XML)"},
    {"atom", parse_atom, "Atom entry (RFC 4287, XEP-0277 microblog)"},
    {"video", parse_video, "Atom entry or RSS 2.0 item with Media RSS and pgpod video fields"},
};

static const parser_entry *
parser_find(const char *name)
{
	for (size_t i = 0; i < lengthof(parsers); i++)
		if (strcmp(parsers[i].name, name) == 0)
			return &parsers[i];
	return NULL;
}

/* --- emitting JSONB ------------------------------------------------------------------ */

static void
put_key(JsonbParseState **st, const char *k)
{
	JsonbValue v;

	v.type = jbvString;
	v.val.string.val = (char *)k;
	v.val.string.len = strlen(k);
	pushJsonbValue(st, WJB_KEY, &v);
}

static void
put_string(JsonbParseState **st, JsonbIteratorToken tok, const char *s)
{
	JsonbValue v;

	v.type = jbvString;
	v.val.string.val = (char *)s;
	v.val.string.len = strlen(s);
	pushJsonbValue(st, tok, &v);
}

static void
put_number(JsonbParseState **st, JsonbIteratorToken tok, const char *s)
{
	JsonbValue v;

	size_t digits = strspn(s, "0123456789");

	v.type = jbvNumeric;
	/* Most numbers of a feed are plain integers (up to 15 digits float8 holds them
	 * exactly, so the result is the same): made directly, not through float8's
	 * text round trip (snprintf then numeric_in), a tenth of the parse's time. */
	if (digits > 0 && digits <= 15 && s[digits] == '\0')
		v.val.numeric = int64_to_numeric(strtoll(s, NULL, 10));
	else
		v.val.numeric = DatumGetNumeric(DirectFunctionCall1(float8_numeric, Float8GetDatum(strtod(s, NULL))));
	pushJsonbValue(st, tok, &v);
}

static void
field(JsonbParseState **st, const char *k, const char *s)
{
	if (s == NULL)
		return;
	put_key(st, k);
	put_string(st, WJB_VALUE, s);
}

static void
field_number(JsonbParseState **st, const char *k, const char *s)
{
	if (s == NULL)
		return;
	put_key(st, k);
	put_number(st, WJB_VALUE, s);
}

/* The fields of one element of an array of objects, keys in JSONB's order. */
typedef void (*object_fields_fn)(JsonbParseState **st, const void *item);

static void
file_fields(JsonbParseState **st, const void *item)
{
	const file_field *f = item;

	field_number(st, "fps", f->fps);
	field(st, "url", f->url);
	field_number(st, "size", f->size);
	field(st, "type", f->type);
	field_number(st, "width", f->width);
	field(st, "medium", f->medium);
	field_number(st, "bitrate", f->bitrate);
	field_number(st, "duration", f->duration);
	field_number(st, "resolution", f->height);
}

static void
link_fields(JsonbParseState **st, const void *item)
{
	const link_field *l = item;

	field(st, "rel", l->rel ? l->rel : "alternate");
	field(st, "href", l->href);
	field(st, "type", l->type);
	field(st, "title", l->title);
	field_number(st, "length", l->length);
}

static void
category_fields(JsonbParseState **st, const void *item)
{
	const category_field *k = item;

	field(st, "term", k->term);
	field(st, "label", k->label);
	field(st, "scheme", k->scheme);
}

static void
thumb_fields(JsonbParseState **st, const void *item)
{
	const thumb_field *t = item;

	field(st, "url", t->url);
	field_number(st, "width", t->width);
	field_number(st, "height", t->height);
}

static void
reply_fields(JsonbParseState **st, const void *item)
{
	const reply_field *r = item;

	field(st, "ref", r->ref);
	field(st, "href", r->href);
}

/* key: [ {fields of each item} ], nothing when the list is empty. */
static void
object_array(JsonbParseState **st, const char *key, const List *items, object_fields_fn fields)
{
	ListCell *lc;

	if (items == NIL)
		return;
	put_key(st, key);
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	foreach (lc, items)
	{
		pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
		fields(st, lfirst(lc));
		pushJsonbValue(st, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);
}

/* key: [ strings ], nothing when the list is empty. */
static void
string_array(JsonbParseState **st, const char *key, const List *items)
{
	ListCell *lc;

	if (items == NIL)
		return;
	put_key(st, key);
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	foreach (lc, items)
		put_string(st, WJB_ELEM, lfirst(lc));
	pushJsonbValue(st, WJB_END_ARRAY, NULL);
}

/*
 * The JSONB of an entry. Keys go out in JSONB's own order (shorter first, then
 * bytewise), so that each object's sort at its end finds them sorted in one pass:
 * sorting them was a tenth of the parse's time.
 */
static Jsonb *
emit(const char *parser, const entry_fields *e)
{
	JsonbParseState *st = NULL;
	JsonbValue *res;
	ListCell *lc;
	bool video = strcmp(parser, "video") == 0;
	const thumb_field *best = NULL;

	if (video)
		foreach (lc, e->thumbnails)
		{
			thumb_field *t = lfirst(lc);

			/* the widest one is "the" thumbnail */
			if (best == NULL || (t->width && (!best->width || strtod(t->width, NULL) > strtod(best->width, NULL))))
				best = t;
		}

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	field(&st, "id", e->id);
	field(&st, "link", e->link);
	if (video)
	{
		field(&st, "uuid", e->uuid);
		object_array(&st, "files", e->files, file_fields);
	}
	object_array(&st, "links", e->links, link_fields);
	field(&st, "title", e->title);
	if (video)
		field_number(&st, "views", e->views);
	if (e->author_name || e->author_uri || e->author_email)
	{
		put_key(&st, "author");
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		field(&st, "uri", e->author_uri);
		field(&st, "name", e->author_name);
		field(&st, "email", e->author_email);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	if (video)
		field(&st, "embed", e->embed);
	field(&st, "format", e->format);
	if (video)
	{
		field(&st, "magnet", e->magnet);
		field(&st, "origin", e->origin);
	}
	field(&st, "parser", parser);
	if (video)
		field(&st, "player", e->player);
	field(&st, "content", e->content);
	field(&st, "summary", e->summary);
	field(&st, "updated", e->updated);
	field(&st, "comments", e->comments);
	if (video)
	{
		field_number(&st, "duration", e->duration);
		string_array(&st, "keywords", e->keywords);
		string_array(&st, "torrents", e->torrents);
	}
	field(&st, "published", e->published);
	if (video && best)
		field(&st, "thumbnail", best->url);
	object_array(&st, "categories", e->categories, category_fields);
	if (video)
		object_array(&st, "thumbnails", e->thumbnails, thumb_fields);
	object_array(&st, "in_reply_to", e->replies, reply_fields);
	field(&st, "content_xhtml", e->content_xhtml);
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* --- SQL ----------------------------------------------------------------------------- */

/* pod.pubsub_parse(parser text, payload text) RETURNS jsonb */
Datum
pubsub_parse(PG_FUNCTION_ARGS)
{
	char *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text *payload = PG_GETARG_TEXT_PP(1);
	const parser_entry *p = parser_find(name);
	xmlDocPtr volatile doc;
	Jsonb *result = NULL;

	if (p == NULL)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("no pubsub parser named \"%s\"", name),
		                errhint("SELECT * FROM pod.pubsub_parsers() lists them.")));
	doc = pubsub_xml_read(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload), PUBSUB_MAX_ITEM_BYTES);
	PG_TRY();
	{
		entry_fields e = {0};
		xmlNodePtr root = xmlDocGetRootElement(doc);

		p->fn(root, &e);
		if (p->fn == parse_root_only)
		{
			JsonbParseState *st = NULL;

			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			field(&st, "root", (const char *)root->name);
			if (root->ns && root->ns->href && root->ns->href[0])
				field(&st, "namespace", (const char *)root->ns->href);
			result = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
		}
		else
			result = emit(p->name, &e);
	}
	PG_CATCH();
	{
		xmlFreeDoc(doc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	xmlFreeDoc(doc);
	PG_RETURN_JSONB_P(result);
}

/* pod.pubsub_parser_known(name text) RETURNS boolean */
Datum
pubsub_parser_known(PG_FUNCTION_ARGS)
{
	char *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_BOOL(parser_find(name) != NULL);
}

/* pod.pubsub_parsers() RETURNS TABLE (name text, description text) */
Datum
pubsub_parsers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (size_t i = 0; i < lengthof(parsers); i++)
	{
		Datum values[2] = {CStringGetTextDatum(parsers[i].name), CStringGetTextDatum(parsers[i].description)};
		bool nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum)0;
}
