"""winnow's example of user code: a tabular classifier on a CSV file, searched with the user's
own data function (``data.load``), network (``models.build``) and training loop
(``train.fit``). See ``examples/tabular/README.md``."""
