"""Report sections: every module in this package registers its own section.

Add a capability's section by adding a module here that decorates a builder
with :func:`cnnlens.report.section`; the report discovers the module by
itself, no central list is edited.
"""
