/*
 * pubsub_xml.c — reading untrusted XML for the pubsub cache with libxml2, safely: no
 * document type declaration at all (so no entity can be declared, expanded or loaded:
 * XXE and "billion laughs" are refused before anything is expanded), no network, a
 * size and a depth limit. Also splits a feed document (Atom or RSS 2.0) into its
 * entries, each a standalone XML payload (pod.feed_entries).
 * libxml2 allocates with malloc: every document is freed on the error path too.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/xml.h"

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlsave.h>

#include "pubsub.h"

PG_FUNCTION_INFO_V1(feed_entries);

/* A DOCTYPE (with or without internal subset) stops the parse at once. */
static void
refuse_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id, const xmlChar *system_id)
{
	xmlParserCtxtPtr ctxt = ctx;

	*(bool *)ctxt->_private = true;
	xmlStopParser(ctxt);
}

static int
depth_of(const xmlNode *n, int depth)
{
	int deepest = depth;

	for (const xmlNode *c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
		{
			int d = depth_of(c, depth + 1);

			if (d > deepest)
				deepest = d;
			if (deepest > PUBSUB_MAX_DEPTH)
				break;
		}
	return deepest;
}

/*
 * The parser context, kept for the backend's life: making one (its dictionary, stacks
 * and SAX handler: a dozen mallocs) was a fifth of parsing a 1.3 kB item. Each read
 * resets it; an error drops it (a new one is made next time), and so does a
 * dictionary grown past a few thousand names (payloads choose their names).
 */
static xmlParserCtxtPtr reader_ctxt = NULL;

#define READER_MAX_NAMES 4096

static xmlParserCtxtPtr
reader_context(PgXmlErrorContext *xerr)
{
	if (reader_ctxt && xmlDictSize(reader_ctxt->dict) > READER_MAX_NAMES)
	{
		xmlFreeParserCtxt(reader_ctxt);
		reader_ctxt = NULL;
	}
	if (reader_ctxt == NULL)
	{
		reader_ctxt = xmlNewParserCtxt();
		if (reader_ctxt == NULL || pg_xml_error_occurred(xerr))
		{
			if (reader_ctxt)
				xmlFreeParserCtxt(reader_ctxt);
			reader_ctxt = NULL;
			xml_ereport(xerr, ERROR, ERRCODE_OUT_OF_MEMORY, "could not allocate an XML parser");
		}
		reader_ctxt->sax->internalSubset = refuse_doctype;
		reader_ctxt->sax->externalSubset = refuse_doctype;
	}
	return reader_ctxt;
}

xmlDocPtr
pubsub_xml_read(const char *data, size_t len, size_t max_bytes)
{
	PgXmlErrorContext *xerr;
	xmlParserCtxtPtr ctxt;
	xmlDocPtr volatile doc = NULL;
	bool doctype = false;

	if (len > max_bytes)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("XML payload of %zu bytes is over the limit of %zu bytes", len, max_bytes)));
	if (len > INT_MAX)
		elog(ERROR, "XML payload too large");

	xerr = pg_xml_init(PG_XML_STRICTNESS_WELLFORMED);
	PG_TRY();
	{
		ctxt = reader_context(xerr);
		ctxt->_private = &doctype;
		/* Without XML_PARSE_NOENT, XML_PARSE_DTDLOAD or XML_PARSE_HUGE: nothing is
		 * substituted or loaded, and libxml2 keeps its own text-size limits. */
		doc = xmlCtxtReadMemory(ctxt, data, (int)len, NULL, NULL,
		                        XML_PARSE_NONET | XML_PARSE_NOWARNING);
		if (doctype)
			ereport(ERROR, (errcode(ERRCODE_PUBSUB_DTD_REFUSED),
			                errmsg("XML with a document type declaration is refused"),
			                errdetail("Payloads may not declare a DTD or entities (external entities and entity expansion are never processed).")));
		if (doc == NULL || !ctxt->wellFormed || pg_xml_error_occurred(xerr))
			xml_ereport(xerr, ERROR, ERRCODE_INVALID_XML_DOCUMENT, "payload is not well-formed XML");
		if (xmlDocGetRootElement(doc) == NULL)
			ereport(ERROR, (errcode(ERRCODE_INVALID_XML_DOCUMENT), errmsg("payload has no root element")));
		if (depth_of(xmlDocGetRootElement(doc), 1) > PUBSUB_MAX_DEPTH)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			                errmsg("XML payload is nested deeper than %d elements", PUBSUB_MAX_DEPTH)));
	}
	PG_CATCH();
	{
		if (doc)
			xmlFreeDoc(doc);
		if (reader_ctxt)
			xmlFreeParserCtxt(reader_ctxt);
		reader_ctxt = NULL;
		pg_xml_done(xerr, true);
		PG_RE_THROW();
	}
	PG_END_TRY();
	reader_ctxt->_private = NULL;
	pg_xml_done(xerr, false);
	return doc;
}

/* (The parsers ask this of every child for every name they know: the first letter
 * settles most of them without a call.) */
bool
pubsub_xml_is(const xmlNode *n, const char *ns, const char *name)
{
	if (n == NULL || n->type != XML_ELEMENT_NODE || n->name[0] != (xmlChar)name[0] ||
	    strcmp((const char *)n->name, name) != 0)
		return false;
	if (ns == NULL)
		return n->ns == NULL || n->ns->href == NULL || n->ns->href[0] == '\0';
	return n->ns && n->ns->href && strcmp((const char *)n->ns->href, ns) == 0;
}

/* One entry as a document of its own (namespaces declared where the copy needs them). */
static text *
entry_text(xmlNodePtr entry)
{
	xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
	xmlBufferPtr buf = NULL;
	text *result = NULL;

	PG_TRY();
	{
		xmlNodePtr copy;

		if (doc == NULL)
			elog(ERROR, "out of memory copying a feed entry");
		copy = xmlDocCopyNode(entry, doc, 1);
		if (copy == NULL)
			elog(ERROR, "out of memory copying a feed entry");
		xmlDocSetRootElement(doc, copy);
		xmlReconciliateNs(doc, copy);
		buf = xmlBufferCreate();
		if (buf == NULL || xmlNodeDump(buf, doc, copy, 0, 0) < 0)
			elog(ERROR, "could not serialise a feed entry");
		result = cstring_to_text_with_len((const char *)xmlBufferContent(buf), xmlBufferLength(buf));
	}
	PG_CATCH();
	{
		if (buf)
			xmlBufferFree(buf);
		xmlFreeDoc(doc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	xmlBufferFree(buf);
	xmlFreeDoc(doc);
	return result;
}

/*
 * pod.feed_entries(document text) RETURNS TABLE (format text, entry text, alternate text):
 * the entries of an Atom feed (format 'atom') or the items of an RSS 2.0 channel
 * ('rss'), each as its own XML payload; an Atom feed that names an RSS alternate
 * (link rel=alternate type=application/rss+xml) gives it in the first row's alternate.
 */
Datum
feed_entries(PG_FUNCTION_ARGS)
{
	text *document = PG_GETARG_TEXT_PP(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
	xmlDocPtr volatile doc;

	InitMaterializedSRF(fcinfo, 0);
	doc = pubsub_xml_read(VARDATA_ANY(document), VARSIZE_ANY_EXHDR(document), PUBSUB_MAX_FEED_BYTES);
	PG_TRY();
	{
		xmlNodePtr root = xmlDocGetRootElement(doc);
		xmlNodePtr parent = NULL;
		const char *format = NULL;
		const char *entry_name = NULL;
		const char *entry_ns = NULL;
		char *alternate = NULL;

		if (pubsub_xml_is(root, NS_ATOM, "feed"))
		{
			parent = root, format = "atom", entry_name = "entry", entry_ns = NS_ATOM;
			for (xmlNodePtr c = root->children; c; c = c->next)
				if (pubsub_xml_is(c, NS_ATOM, "link") && alternate == NULL)
				{
					xmlChar *rel = xmlGetProp(c, BAD_CAST "rel");
					xmlChar *type = xmlGetProp(c, BAD_CAST "type");
					xmlChar *href = xmlGetProp(c, BAD_CAST "href");

					if (rel && type && href && xmlStrEqual(rel, BAD_CAST "alternate") &&
					    xmlStrEqual(type, BAD_CAST "application/rss+xml"))
						alternate = pstrdup((char *)href);
					xmlFree(rel);
					xmlFree(type);
					xmlFree(href);
				}
		}
		else if (pubsub_xml_is(root, NULL, "rss"))
		{
			format = "rss", entry_name = "item", entry_ns = NULL;
			for (xmlNodePtr c = root->children; c; c = c->next)
				if (pubsub_xml_is(c, NULL, "channel"))
					parent = c;
		}
		else if (pubsub_xml_is(root, NS_ATOM, "entry") || pubsub_xml_is(root, NULL, "item"))
			ereport(ERROR, (errcode(ERRCODE_INVALID_XML_CONTENT),
			                errmsg("document is a single entry, not a feed")));
		else
			ereport(ERROR, (errcode(ERRCODE_INVALID_XML_CONTENT),
			                errmsg("document is neither an Atom feed nor an RSS 2.0 channel"),
			                errdetail("Its root element is <%s>.", (const char *)root->name)));
		for (xmlNodePtr c = parent ? parent->children : NULL; c; c = c->next)
			if (pubsub_xml_is(c, entry_ns, entry_name))
			{
				Datum values[3];
				bool nulls[3] = {false, false, alternate == NULL};

				values[0] = CStringGetTextDatum(format);
				values[1] = PointerGetDatum(entry_text(c));
				values[2] = alternate ? CStringGetTextDatum(alternate) : (Datum)0;
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
				alternate = NULL;
			}
	}
	PG_CATCH();
	{
		xmlFreeDoc(doc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	xmlFreeDoc(doc);
	return (Datum)0;
}
