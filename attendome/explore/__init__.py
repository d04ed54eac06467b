"""See the space: the head explorer (a static site that opens offline) and the paper figures.

Modules: :mod:`.predict` (trained cloners and universal encoder reloaded from their files),
:mod:`.site` (the site's data and files; stage ``explore``), :mod:`.figures` (PNG and SVG figures).
The page itself (``assets/``: ``index.html``, ``app.js``, ``app.css``) is plain JavaScript with no
library; ``vendor/`` holds Vega, Vega-Lite and Vega-Embed for an offline ``dvc plots show`` template.
"""
