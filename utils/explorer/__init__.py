"""The attention explorer: one self-contained HTML page per run (explorer.html), and in a notebook.

    data.py    what the page shows, from the activation cache and the --track_internals record only
    page.py    the page itself (assets/: its HTML, CSS and scripts, inlined), written atomically;
               notebook_view: the same page inline in Jupyter or Colab
    assets/    explorer.html, explorer.css, explorer.js (pickers, head view, model view),
               steps.js (the seven steps, the head's analysis, the training evolution)

A results folder gets explorer.html at the end of every run (utils.explorer.page.write_run_explorer);
`--checkpoint PATH --source TEXT --explore` writes one for any input (commands/explore.py), and
`commands.explore.show_attention(model, "hello", tokenizer)` shows it in a notebook.
"""
