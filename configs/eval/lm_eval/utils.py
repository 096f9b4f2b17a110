"""process_docs hooks of the local lm-eval tasks (lm-eval imports this file by name from the task folder)."""


def nonempty_text(dataset):
    return dataset.filter(lambda doc: bool(doc["text"] and doc["text"].strip()))


def nonempty_review(dataset):
    # the file is sorted by label: shuffle (fixed seed) so that --limit takes both classes
    kept = dataset.filter(lambda doc: bool(doc["review"] and str(doc["review"]).strip()))
    return kept.shuffle(seed=1234)
