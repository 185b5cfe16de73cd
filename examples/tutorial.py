"""The README tutorial as a script: run it against a running cluster (hpcpar start -n 4 --daemonize --wait)."""

import hpcpar


def mul(a, b):
    return a * b


rc = hpcpar.Client()
rc.block = True
print("engines:", rc.ids)
print("rc[0].apply(mul, 5, 6) =", rc[0].apply(mul, 5, 6))
print("rc[:].apply(mul, 5, 6) =", rc[:].apply(mul, 5, 6))
print("load-balanced map:", rc.load_balanced_view().map(mul, range(1, 10), range(2, 11)))

dview = rc[:]
dview.push({"scale": 10})


@hpcpar.interactive
def scaled(x):
    return x * scale  # noqa: F821 - pushed to the engines above


print("pushed names are globals on the engines:", dview.apply(scaled, 2))
dview.scatter("part", list(range(16)))
print("each engine holds a part:", dview.pull("part"))
print("gathered back:", dview.gather("part"))
rc.close()
