/*
 * dwarfline.c - source file and line of an address, from the DWARF line
 * table (.debug_line) of an ELF image.
 *
 * The line programs of every compilation unit are run once into one
 * table of rows (address, file, line) sorted by address; an address maps
 * to the last row at or below it, unless that row ends a sequence (the
 * address lies between functions).  DWARF versions 2 to 5, 32- and 64-bit
 * units; .debug_line_str and .debug_str for the names of version 5;
 * sections compressed with zlib (SHF_COMPRESSED, as Debian's debug files
 * ship them).  Inlined calls are not told apart: an address inside an
 * inlined function gets the line of the inlined code, which is where the
 * time went.  Only ELF64 little-endian, as symbolize.c.
 *
 * Everything read is bounds-checked: a damaged section ends its unit,
 * never the reader.
 */
#include "config.h"

#include <elf.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dwarfline.h"

struct dwl_row {
	uint64_t	 addr;
	uint32_t	 file;		/* index into files; DWL_END: end of a sequence */
	uint32_t	 line;
};

#define DWL_END	UINT32_MAX

struct dwl_table {
	struct dwl_row	*rows;
	size_t		 nrows, rcap;
	char		**files;	/* "dir/name", owned */
	size_t		 nfiles, fcap;
	void		*inflated[3];	/* decompressed sections */
};

struct sect {
	const unsigned char	*p;
	size_t			 len;
};

/* A bounded reader; any overrun sets bad and yields zeros. */
struct rd {
	const unsigned char	*p, *end;
	int			 bad;
};

static uint64_t
rd_u(struct rd *r, unsigned n)
{
	uint64_t v = 0;

	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = 1;
		r->p = r->end;
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)r->p[i] << (8 * i);
	r->p += n;
	return v;
}

static uint64_t
rd_uleb(struct rd *r)
{
	uint64_t v = 0;
	unsigned shift = 0;

	while (r->p < r->end) {
		unsigned char b = *r->p++;

		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
		if (!(b & 0x80))
			return v;
	}
	r->bad = 1;
	return 0;
}

static int64_t
rd_sleb(struct rd *r)
{
	int64_t v = 0;
	unsigned shift = 0;
	unsigned char b = 0;

	while (r->p < r->end) {
		b = *r->p++;
		if (shift < 64)
			v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
		shift += 7;
		if (!(b & 0x80)) {
			if (shift < 64 && (b & 0x40))
				v |= -(int64_t)((uint64_t)1 << shift);
			return v;
		}
	}
	r->bad = 1;
	return 0;
}

static const char *
rd_str(struct rd *r)
{
	const unsigned char *s = r->p, *z = r->bad ? NULL : memchr(r->p, '\0', (size_t)(r->end - r->p));

	if (!z) {
		r->bad = 1;
		r->p = r->end;
		return "";
	}
	r->p = z + 1;
	return (const char *)s;
}

static const char *
sect_str(const struct sect *s, uint64_t off)
{
	if (!s->p || off >= s->len || !memchr(s->p + off, '\0', s->len - off))
		return "";
	return (const char *)s->p + off;
}

/* A section's bytes; compressed ones are inflated into t->inflated[slot]. */
static struct sect
find_section(struct dwl_table *t, const void *base, size_t len, const char *name, int slot)
{
	const Elf64_Ehdr *eh = base;
	const Elf64_Shdr *sh, *strs;
	struct sect none = { NULL, 0 };

	if (len < sizeof(*eh) || eh->e_shoff > len || eh->e_shnum == 0 ||
	    eh->e_shnum > (len - eh->e_shoff) / sizeof(Elf64_Shdr) || eh->e_shstrndx >= eh->e_shnum)
		return none;
	sh = (const Elf64_Shdr *)((const char *)base + eh->e_shoff);
	strs = &sh[eh->e_shstrndx];
	if (strs->sh_offset > len || strs->sh_size > len - strs->sh_offset)
		return none;
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		const char *nm;
		const unsigned char *p;

		if (sh[i].sh_name >= strs->sh_size || sh[i].sh_type == SHT_NOBITS)
			continue;
		nm = (const char *)base + strs->sh_offset + sh[i].sh_name;
		if (!memchr(nm, '\0', strs->sh_size - sh[i].sh_name) || strcmp(nm, name) != 0)
			continue;
		if (sh[i].sh_offset > len || sh[i].sh_size > len - sh[i].sh_offset)
			return none;
		p = (const unsigned char *)base + sh[i].sh_offset;
		if (sh[i].sh_flags & SHF_COMPRESSED) {
			Elf64_Chdr ch;
			uLongf out;
			unsigned char *buf;

			if (sh[i].sh_size < sizeof(ch))
				return none;
			memcpy(&ch, p, sizeof(ch));
			if (ch.ch_type != ELFCOMPRESS_ZLIB || ch.ch_size == 0 || ch.ch_size > (1u << 30))
				return none;
			buf = malloc(ch.ch_size);
			out = (uLongf)ch.ch_size;
			if (!buf || uncompress(buf, &out, p + sizeof(ch), (uLong)(sh[i].sh_size - sizeof(ch))) != Z_OK) {
				free(buf);
				return none;
			}
			free(t->inflated[slot]);
			t->inflated[slot] = buf;
			return (struct sect){ buf, out };
		}
		return (struct sect){ p, sh[i].sh_size };
	}
	return none;
}

static int
add_row(struct dwl_table *t, uint64_t addr, uint32_t file, uint32_t line)
{
	if (t->nrows == t->rcap) {
		size_t cap = t->rcap ? t->rcap * 2 : 4096;
		struct dwl_row *n = realloc(t->rows, cap * sizeof(*n));

		if (!n)
			return -1;
		t->rows = n;
		t->rcap = cap;
	}
	t->rows[t->nrows++] = (struct dwl_row){ addr, file, line };
	return 0;
}

/* Intern "dir/name" (name alone when absolute or dir empty); index, or DWL_END. */
static uint32_t
add_file(struct dwl_table *t, const char *dir, const char *name)
{
	size_t dl = (name[0] == '/' || !dir) ? 0 : strlen(dir), nl = strlen(name);
	char *s;

	if (t->nfiles == t->fcap) {
		size_t cap = t->fcap ? t->fcap * 2 : 64;
		char **n = realloc(t->files, cap * sizeof(*n));

		if (!n)
			return DWL_END;
		t->files = n;
		t->fcap = cap;
	}
	s = malloc(dl + 1 + nl + 1);
	if (!s)
		return DWL_END;
	memcpy(s, dir, dl);
	if (dl && dir[dl - 1] != '/')
		s[dl++] = '/';
	memcpy(s + dl, name, nl + 1);
	t->files[t->nfiles] = s;
	return (uint32_t)t->nfiles++;
}

#define MAXENT	1024	/* directories / files per unit kept; more are rare */

/* One form's value: a string (strings) or a number. */
static void
read_form(struct rd *r, uint64_t form, int off64, const struct sect *line_str,
    const struct sect *str, const char **s, uint64_t *v)
{
	*s = NULL;
	*v = 0;
	switch (form) {
	case 0x08:	/* DW_FORM_string */
		*s = rd_str(r);
		break;
	case 0x1f:	/* DW_FORM_line_strp */
		*s = sect_str(line_str, rd_u(r, off64 ? 8 : 4));
		break;
	case 0x0e:	/* DW_FORM_strp */
		*s = sect_str(str, rd_u(r, off64 ? 8 : 4));
		break;
	case 0x0f:	/* DW_FORM_udata */
		*v = rd_uleb(r);
		break;
	case 0x0b:	/* DW_FORM_data1 */
		*v = rd_u(r, 1);
		break;
	case 0x05:	/* DW_FORM_data2 */
		*v = rd_u(r, 2);
		break;
	case 0x06:	/* DW_FORM_data4 */
		*v = rd_u(r, 4);
		break;
	case 0x07:	/* DW_FORM_data8 */
		*v = rd_u(r, 8);
		break;
	case 0x1e:	/* DW_FORM_data16 */
		(void)rd_u(r, 8);
		(void)rd_u(r, 8);
		break;
	case 0x09: {	/* DW_FORM_block */
		uint64_t n = rd_uleb(r);
		if (n > (uint64_t)(r->end - r->p))
			r->bad = 1;
		else
			r->p += n;
		break;
	}
	default:
		r->bad = 1;	/* a form we cannot skip: give up on the unit */
	}
}

/*
 * Version 5 directory or file entries: the format, then the entries.
 * paths[i] gets DW_LNCT_path, dirs[i] DW_LNCT_directory_index.  Count.
 */
static size_t
read_entries(struct rd *r, int off64, const struct sect *ls, const struct sect *st,
    const char **paths, uint64_t *dirs)
{
	uint64_t fmt[16][2], n;
	unsigned nfmt = (unsigned)rd_u(r, 1);
	size_t kept = 0;

	if (nfmt > 16) {
		r->bad = 1;
		return 0;
	}
	for (unsigned i = 0; i < nfmt; i++) {
		fmt[i][0] = rd_uleb(r);
		fmt[i][1] = rd_uleb(r);
	}
	n = rd_uleb(r);
	for (uint64_t k = 0; k < n && !r->bad; k++) {
		const char *path = "";
		uint64_t dir = 0;

		for (unsigned i = 0; i < nfmt; i++) {
			const char *s;
			uint64_t v;

			read_form(r, fmt[i][1], off64, ls, st, &s, &v);
			if (fmt[i][0] == 1 && s)	/* DW_LNCT_path */
				path = s;
			else if (fmt[i][0] == 2)	/* DW_LNCT_directory_index */
				dir = v;
		}
		if (kept < MAXENT) {
			paths[kept] = path;
			if (dirs)
				dirs[kept] = dir;
			kept++;
		}
	}
	return kept;
}

/* Run one unit's line program; 0, or -1 (out of memory). */
static int
read_unit(struct dwl_table *t, struct rd *u, int off64, const struct sect *ls, const struct sect *st)
{
	const char *dirs[MAXENT], *fnames[MAXENT];
	uint64_t fdir[MAXENT];
	uint32_t fidx[MAXENT];
	size_t ndirs = 0, nfiles = 0;
	unsigned version, min_len, line_range, opcode_base, lens[256] = { 0 };
	int line_base;
	uint64_t hlen;
	struct rd h;

	version = (unsigned)rd_u(u, 2);
	if (version < 2 || version > 5)
		return 0;
	if (version >= 5) {
		if (rd_u(u, 1) != 8)	/* address size */
			return 0;
		(void)rd_u(u, 1);	/* segment selector size */
	}
	hlen = rd_u(u, off64 ? 8 : 4);
	if (u->bad || hlen > (uint64_t)(u->end - u->p))
		return 0;
	h = (struct rd){ u->p, u->p + hlen, 0 };
	u->p += hlen;		/* the program follows the header */
	min_len = (unsigned)rd_u(&h, 1);
	if (version >= 4)
		(void)rd_u(&h, 1);	/* maximum operations per instruction */
	(void)rd_u(&h, 1);	/* default_is_stmt */
	line_base = (int)(int8_t)rd_u(&h, 1);
	line_range = (unsigned)rd_u(&h, 1);
	opcode_base = (unsigned)rd_u(&h, 1);
	if (h.bad || line_range == 0 || opcode_base == 0)
		return 0;
	for (unsigned i = 1; i < opcode_base; i++)
		lens[i] = (unsigned)rd_u(&h, 1);
	if (version >= 5) {
		ndirs = read_entries(&h, off64, ls, st, dirs, NULL);
		nfiles = read_entries(&h, off64, ls, st, fnames, fdir);
	} else {
		dirs[ndirs++] = "";	/* 0: the compilation directory, unknown here */
		for (;;) {
			const char *d = rd_str(&h);
			if (h.bad || !*d)
				break;
			if (ndirs < MAXENT)
				dirs[ndirs++] = d;
		}
		fnames[nfiles] = "";	/* 1-based */
		fdir[nfiles++] = 0;
		for (;;) {
			const char *f = rd_str(&h);
			uint64_t d;

			if (h.bad || !*f)
				break;
			d = rd_uleb(&h);
			(void)rd_uleb(&h);	/* mtime */
			(void)rd_uleb(&h);	/* length */
			if (nfiles < MAXENT) {
				fnames[nfiles] = f;
				fdir[nfiles++] = d;
			}
		}
	}
	if (h.bad)
		return 0;
	for (size_t i = 0; i < nfiles; i++) {
		const char *d = fdir[i] < ndirs ? dirs[fdir[i]] : "";
		char *full = NULL;

		/* A relative directory is under the compilation directory (entry 0 in v5). */
		if (version >= 5 && d[0] != '/' && fdir[i] != 0 && ndirs > 0 && dirs[0][0]) {
			size_t a = strlen(dirs[0]), b = strlen(d);
			full = malloc(a + b + 2);
			if (full) {
				memcpy(full, dirs[0], a);
				full[a] = '/';
				memcpy(full + a + 1, d, b + 1);
				d = full;
			}
		}
		fidx[i] = fnames[i][0] ? add_file(t, d, fnames[i]) : DWL_END;
		free(full);
	}

	/* The line program. */
	{
		uint64_t addr = 0;
		uint64_t file = 1, line = 1;
		int seq = 0;

		while (u->p < u->end && !u->bad) {
			unsigned op = (unsigned)rd_u(u, 1);
			int emit = 0;

			if (op >= opcode_base) {
				unsigned adj = op - opcode_base;
				addr += (uint64_t)(adj / line_range) * min_len;
				line += (uint64_t)(int64_t)(line_base + (int)(adj % line_range));
				emit = 1;
			} else if (op == 0) {
				uint64_t n = rd_uleb(u);
				const unsigned char *next;
				unsigned sub;

				if (u->bad || n == 0 || n > (uint64_t)(u->end - u->p))
					break;
				next = u->p + n;
				sub = (unsigned)rd_u(u, 1);
				if (sub == 1) {		/* DW_LNE_end_sequence */
					if (seq && add_row(t, addr, DWL_END, 0) < 0)
						return -1;
					addr = 0;
					file = 1;
					line = 1;
					seq = 0;
				} else if (sub == 2 && n == 9)	/* DW_LNE_set_address */
					addr = rd_u(u, 8);
				u->p = next;	/* define_file, discriminator, vendor: skipped */
			} else {
				switch (op) {
				case 1:		/* DW_LNS_copy */
					emit = 1;
					break;
				case 2:		/* DW_LNS_advance_pc */
					addr += rd_uleb(u) * min_len;
					break;
				case 3:		/* DW_LNS_advance_line */
					line += (uint64_t)rd_sleb(u);
					break;
				case 4:		/* DW_LNS_set_file */
					file = rd_uleb(u);
					break;
				case 8:		/* DW_LNS_const_add_pc */
					addr += (uint64_t)((255 - opcode_base) / line_range) * min_len;
					break;
				case 9:		/* DW_LNS_fixed_advance_pc */
					addr += rd_u(u, 2);
					break;
				default:	/* operands we do not use */
					for (unsigned i = 0; i < lens[op]; i++)
						(void)rd_uleb(u);
				}
			}
			if (emit) {
				/* v5 numbers files from 0, earlier versions from 1 (entry 0 unused) */
				uint32_t f = file < nfiles ? fidx[file] : DWL_END;

				/* an address 0 is a function the linker dropped */
				if (addr && f != DWL_END && add_row(t, addr, f, (uint32_t)line) < 0)
					return -1;
				seq = addr != 0;
			}
		}
	}
	return 0;
}

static int
row_cmp(const void *a, const void *b)
{
	const struct dwl_row *x = a, *y = b;

	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	/* a sequence that starts where another ended wins */
	return (x->file == DWL_END) - (y->file == DWL_END);
}

struct dwl_table *
dwl_load(const void *base, size_t len)
{
	struct dwl_table *t = calloc(1, sizeof(*t));
	struct sect dl, ls, st;
	struct rd r;

	if (!t)
		return NULL;
	dl = find_section(t, base, len, ".debug_line", 0);
	if (!dl.p) {
		free(t);
		return NULL;
	}
	ls = find_section(t, base, len, ".debug_line_str", 1);
	st = find_section(t, base, len, ".debug_str", 2);
	r = (struct rd){ dl.p, dl.p + dl.len, 0 };
	while (r.p < r.end && !r.bad) {
		uint64_t ulen = rd_u(&r, 4);
		int off64 = 0;
		struct rd u;

		if (ulen == 0xffffffffu) {
			ulen = rd_u(&r, 8);
			off64 = 1;
		}
		if (r.bad || ulen == 0 || ulen > (uint64_t)(r.end - r.p))
			break;
		u = (struct rd){ r.p, r.p + ulen, 0 };
		r.p += ulen;
		if (read_unit(t, &u, off64, &ls, &st) < 0)
			break;
	}
	for (int i = 0; i < 3; i++) {
		/* names were copied into files; the program is no longer needed */
		free(t->inflated[i]);
		t->inflated[i] = NULL;
	}
	if (t->nrows == 0) {
		dwl_free(t);
		return NULL;
	}
	qsort(t->rows, t->nrows, sizeof(*t->rows), row_cmp);
	return t;
}

int
dwl_lookup(const struct dwl_table *t, uint64_t vaddr, const char **file, unsigned *line)
{
	size_t lo = 0, hi;

	if (!t)
		return -1;
	hi = t->nrows;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->rows[mid].addr <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || t->rows[lo - 1].file == DWL_END)
		return -1;
	*file = t->files[t->rows[lo - 1].file];
	*line = t->rows[lo - 1].line;
	return 0;
}

void
dwl_free(struct dwl_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nfiles; i++)
		free(t->files[i]);
	for (int i = 0; i < 3; i++)
		free(t->inflated[i]);
	free(t->files);
	free(t->rows);
	free(t);
}
