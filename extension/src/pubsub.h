/*
 * pubsub.h — what the pubsub cache's C files share: the safe XML reader
 * (pubsub_xml.c) and the parsers registered by name (pubsub_parse.c).
 */
#ifndef PGPOD_PUBSUB_H
#define PGPOD_PUBSUB_H

#include <libxml/tree.h>

/* Limits of one payload (an item) and of one feed document. */
#define PUBSUB_MAX_ITEM_BYTES (256 * 1024)
#define PUBSUB_MAX_FEED_BYTES (8 * 1024 * 1024)
#define PUBSUB_MAX_DEPTH 48

/* SQLSTATE of a payload with a document type declaration (XXE, entity bombs). */
#define ERRCODE_PUBSUB_DTD_REFUSED MAKE_SQLSTATE('P', 'X', '0', '0', '1')

/* Namespaces the parsers read. */
#define NS_ATOM "http://www.w3.org/2005/Atom"
#define NS_MRSS "http://search.yahoo.com/mrss/"
#define NS_THREAD "http://purl.org/syndication/thread/1.0"
#define NS_CONTENT "http://purl.org/rss/1.0/modules/content/"
#define NS_DC "http://purl.org/dc/elements/1.1/"
#define NS_PGPOD "urn:pgpod:video:0"

/*
 * Reads data as XML refusing DTDs (so entities and external loading), network
 * access, more than max_bytes and nesting deeper than PUBSUB_MAX_DEPTH; raises a
 * clear error otherwise. The caller frees the document with xmlFreeDoc (also on
 * error: wrap its use in PG_TRY).
 */
extern xmlDocPtr pubsub_xml_read(const char *data, size_t len, size_t max_bytes);

/* Is the element in namespace ns (NULL: no namespace) with this local name? */
extern bool pubsub_xml_is(const xmlNode *n, const char *ns, const char *name);

#endif
