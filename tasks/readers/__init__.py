"""Readers of the SHORT datasets' original files, one module per dataset family.

A reader is a function `read(src: SourceFolder) -> Iterator[Example]` that yields every example of
one dataset in the order the Nevis handlers (or TFDS builders) visit them; the catalogue
(`nevis_short.yaml`, `prepare.reader: module:function`) names it. Readers never extract archives
to disk: members are read in memory and every member name is checked (see
`nevisbench.tasks.archives`). Each module names the files it reads beside its reader; their URLs
and checksums live in the catalogue.
"""

__all__: list[str] = []
