// nbhosting's entries in the File menu of Notebook 7 and JupyterLab 4:
// reset the notebook to the course's version, share a static copy, show the
// student id. The work is done by the student's own server (the image's
// nbh_menus server extension, under <base_url>nbh/); requests carry the
// server's token in a header, as all of Jupyter's do, so they need no cookie
// in the LMS's cross-site iframe.
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

const COMMANDS = {
  reset: 'nbhosting:reset',
  share: 'nbhosting:share',
  whoami: 'nbhosting:whoami'
};

// A URL of this server with the server's token, the one already in the
// page's own config; any other URL as it is.
function withToken(url) {
  const token = PageConfig.getToken();
  if (!token || url === undefined || url === null || url === '') {
    return url;
  }
  const base = new URL(PageConfig.getBaseUrl(), window.location.href);
  const target = new URL(String(url), window.location.href);
  if (target.origin !== base.origin || !target.pathname.startsWith(base.pathname)) {
    return url;
  }
  if (!target.searchParams.has('token')) {
    target.searchParams.set('token', token);
  }
  return target.toString();
}

// The site's pages, on the site's origin, keep the token in their URL.
// Jupyter's front end drops it once loaded, after which reloading the
// iframe alone, or opening a link in a new tab ("Open in JupyterLab"),
// reaches the server with no credential at all (a third-party iframe keeps
// no cookie): 403.
function keepToken() {
  if (!PageConfig.getToken()) {
    return;
  }
  for (const name of ['pushState', 'replaceState']) {
    const original = window.history[name].bind(window.history);
    window.history[name] = (state, title, url) =>
      original(state, title, withToken(url === undefined ? window.location.href : url));
  }
  const open = window.open.bind(window);
  window.open = (url, ...rest) => open(withToken(url), ...rest);
  window.history.replaceState(window.history.state, '', window.location.href);
}

async function call(path, init = {}) {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbh', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch (error) {
    data = { message: text };
  }
  if (!response.ok) {
    throw new Error(data.message || `${response.status} ${response.statusText}`);
  }
  return data;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function body(...children) {
  const widget = new Widget();
  widget.addClass('nbh-Dialog');
  widget.node.append(...children);
  return widget;
}

function name(path) {
  return path.split('/').pop();
}

async function reset(panel) {
  const path = panel.context.path;
  const answer = await showDialog({
    title: 'Reset to original',
    body: body(
      element('p', {}, `Replace ${name(path)} with the course's current version?`),
      element(
        'p',
        {},
        'Your version is not lost: it is kept as a backup copy in the same folder, ' +
          'with the date and time in its name.'
      )
    ),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Reset' })],
    defaultButton: 0
  });
  if (!answer.button.accept) {
    return;
  }
  try {
    if (panel.context.model.dirty) {
      await panel.context.save();
    }
    const done = await call('reset', { method: 'POST', body: JSON.stringify({ path }) });
    await panel.context.revert();
    await showDialog({
      title: 'Reset to original',
      body: body(
        element('p', {}, `${name(path)} is now the course's version.`),
        done.backup
          ? element('p', {}, 'Your previous version is in ', element('code', { class: 'nbh-backup' }, done.backup))
          : element('p', {}, 'You had no version of your own: nothing to keep.')
      ),
      buttons: [Dialog.okButton()]
    });
  } catch (error) {
    await showErrorMessage('Reset to original', error);
  }
}

function shareDialog(path, url) {
  const link = new URL(url, window.location.href).toString();
  const input = element('input', { class: 'nbh-share-link', readonly: '', value: link, size: '60' });
  const copy = element('button', { class: 'jp-mod-styled jp-mod-accept nbh-share-copy', type: 'button' }, 'Copy');
  copy.addEventListener('click', async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(link);
    } catch (error) {
      document.execCommand('copy'); // an iframe may not be granted the clipboard
    }
    copy.textContent = 'Copied';
  });
  const open = element('a', { class: 'nbh-share-open', href: link, target: '_blank', rel: 'noopener noreferrer' }, 'Open');
  return showDialog({
    title: 'Share a static version',
    body: body(
      element('p', {}, `Anyone with this link can read ${name(path)} as it is saved now, without running it. ` +
        'Share again after a change: the same link shows the new version.'),
      element('p', { class: 'nbh-share-row' }, input, ' ', copy, ' ', open)
    ),
    buttons: [Dialog.okButton({ label: 'Close' }), Dialog.warnButton({ label: 'Withdraw' })],
    defaultButton: 0
  });
}

async function share(panel) {
  const path = panel.context.path;
  try {
    await panel.context.save();
    const shared = await call('share', { method: 'POST', body: JSON.stringify({ path }) });
    const answer = await shareDialog(path, shared.url);
    if (answer.button.label === 'Withdraw') {
      await call(`share?path=${encodeURIComponent(path)}`, { method: 'DELETE' });
      await showDialog({
        title: 'Share a static version',
        body: body(element('p', {}, `The link to ${name(path)} no longer works.`)),
        buttons: [Dialog.okButton()]
      });
    }
  } catch (error) {
    await showErrorMessage('Share a static version', error);
  }
}

async function whoami() {
  try {
    const me = await call('whoami');
    await showDialog({
      title: 'My student id',
      body: body(
        element('p', {}, 'Course: ', element('code', { class: 'nbh-course' }, me.course)),
        element('p', {}, 'Student id: ', element('code', { class: 'nbh-student' }, me.student))
      ),
      buttons: [Dialog.okButton()]
    });
  } catch (error) {
    await showErrorMessage('My student id', error);
  }
}

// The course may hide menu entries and toolbar items from its students
// (`nbh course set COURSE hide=...`): command ids and toolbar item names.
function hide(mainMenu, names) {
  if (!names.length) {
    return;
  }
  const hidden = new Set(names);
  const prune = menu => {
    for (const item of [...menu.items]) {
      if (item.type === 'submenu' && item.submenu) {
        prune(item.submenu);
      } else if (item.type === 'command' && hidden.has(item.command)) {
        menu.removeItem(item);
      }
    }
  };
  for (const menu of mainMenu ? mainMenu.menus : []) {
    prune(menu);
  }
  const style = document.createElement('style');
  style.textContent = names
    .map(item => `.jp-Toolbar-item[data-jp-item-name="${CSS.escape(item)}"] { display: none !important; }`)
    .join('\n');
  document.head.append(style);
}

const plugin = {
  id: '@nbhosting/menus:plugin',
  description: "nbhosting's File menu: reset, share, student id",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IMainMenu],
  activate: (app, tracker, mainMenu) => {
    keepToken();
    // What a notebook shows by a relative path (a markdown image, figures/
    // x.png) is fetched from the server's /files/ by an <img>, which no
    // header can carry the token in, nor a cookie in the LMS's iframe: the
    // URL carries it, as the page's own did.
    const contents = app.serviceManager.contents;
    const getDownloadUrl = contents.getDownloadUrl.bind(contents);
    contents.getDownloadUrl = async path => withToken(await getDownloadUrl(path));
    const current = () => tracker.currentWidget;
    const enabled = () => current() !== null;
    app.commands.addCommand(COMMANDS.reset, {
      label: 'Reset to Original…',
      caption: "Replace this notebook with the course's version (yours is kept as a backup)",
      isEnabled: enabled,
      execute: () => enabled() && reset(current())
    });
    app.commands.addCommand(COMMANDS.share, {
      label: 'Share a Static Version…',
      caption: 'A read-only page of this notebook, for anyone with the link',
      isEnabled: enabled,
      execute: () => enabled() && share(current())
    });
    app.commands.addCommand(COMMANDS.whoami, {
      label: 'Show My Student Id',
      execute: whoami
    });
    if (mainMenu) {
      mainMenu.fileMenu.addGroup(
        [{ command: COMMANDS.reset }, { command: COMMANDS.share }, { command: COMMANDS.whoami }],
        5
      );
    }
    app.restored
      .then(() => call('whoami'))
      .then(me => hide(mainMenu, me.hide || []))
      .catch(error => console.warn('nbhosting: no course settings', error));
  }
};

export default plugin;
