# Sphinx configuration of the documentation site; tools/build_docs.py runs Sphinx with it on the
# notebooks that nbdev processed (see that script). Values come from settings.ini.
from configparser import ConfigParser
from pathlib import Path

_ini = ConfigParser(); _ini.read(Path(__file__).resolve().parents[2]/'settings.ini')
_s = _ini['DEFAULT']

project = _s['lib_name']
author = _s['author']
copyright = _s['copyright']
release = version = _s['version']

extensions = ['myst_nb']
nb_execution_mode = 'off'            # outputs are the ones saved in the notebooks
nb_merge_streams = True
myst_enable_extensions = ['attrs_inline', 'attrs_block', 'colon_fence']
myst_heading_anchors = 4             # `data.ipynb#padcollator` resolves, as nbdev's doc links expect
suppress_warnings = ['myst.header']  # API entries are H3 wherever they stand, as in nbdev's pages
exclude_patterns = ['_build', '**.ipynb_checkpoints']

html_theme = 'furo'
html_title = project
html_static_path = ['_static']
html_css_files = ['site.css']
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {'source_repository': _s['git_url'] + '/', 'source_branch': _s['branch'], 'source_directory': 'nbs/'}
pygments_style = 'friendly'
