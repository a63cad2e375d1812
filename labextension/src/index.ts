/**
 * al-annotator JupyterLab extension.
 *
 * - Launcher card "AL Annotator" (and a palette command): pick a volume or project in the file
 *   browser's directory (or the bundled demo scan) and open it in a new notebook.
 * - File-browser context menu "Open in AL Annotator" on volume files (.tif/.tiff/.h5/.hdf5/.nxs/
 *   .nii/.nii.gz/.npy), .zarr directories, project directories (containing project.json) and
 *   slice-stack / DICOM folders.
 *
 * Each opens a NEW notebook next to the target (``<name>_annotator.ipynb``, never overwriting)
 * whose first cell is ``from al_annotator import Annotator`` / ``Annotator("<name>")``, starts
 * its kernel and runs it. The notebook holds nothing the project directory does not: opening a
 * project twice gives two views of the same project.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, showErrorMessage } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import {
  DEMO_PROJECT,
  PROJECT_FILE,
  IKernelSpecMeta,
  annotatorNotebook,
  basename,
  dirname,
  freeNotebookName,
  isSliceFile,
  isVolumeFile,
  isZarrDir,
  join
} from './paths';

export * from './paths';

/** Command ids. */
export namespace CommandIDs {
  export const launch = 'al-annotator:launch';
  export const openSelected = 'al-annotator:open-selected';
  export const openPath = 'al-annotator:open-path';
}

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 7l9-4 9 4-9 4z" opacity="0.45"/>
    <path d="M3 11.5l9 4 9-4v2l-9 4-9-4z" opacity="0.7"/>
    <path d="M3 16l9 4 9-4v2l-9 4-9-4z"/>
  </g>
  <path class="jp-icon-brand0" fill="#E65100" d="M14.6 5.2l2.2 2.2-5.9 5.9-2.8.6.6-2.8z"/>
</svg>`;

export const annotatorIcon = new LabIcon({ name: 'al-annotator:icon', svgstr: ICON_SVG });

type Contents = JupyterFrontEnd['serviceManager']['contents'];

/** What a path is, for the annotator. */
type TargetKind = 'project' | 'volume' | 'slices';

async function listDir(contents: Contents, path: string): Promise<any[]> {
  const model = await contents.get(path, { content: true, type: 'directory' });
  return Array.isArray(model.content) ? model.content : [];
}

async function exists(contents: Contents, path: string): Promise<any | null> {
  try {
    return await contents.get(path, { content: false });
  } catch (err) {
    return null;
  }
}

/** Whether a directory is a project, a zarr volume, a slice folder, or none of those. */
async function classifyDir(contents: Contents, path: string): Promise<TargetKind | null> {
  if (isZarrDir(basename(path))) {
    return 'volume';
  }
  const items = await listDir(contents, path);
  if (items.some(i => i.type !== 'directory' && i.name === PROJECT_FILE)) {
    return 'project';
  }
  if (items.some(i => i.type !== 'directory' && (i.name === 'zarr.json' || i.name === '.zgroup' || i.name === '.zarray'))) {
    return 'volume';
  }
  if (items.some(i => i.type !== 'directory' && isSliceFile(i.name))) {
    return 'slices';
  }
  return null;
}

async function classify(contents: Contents, model: { path: string; name: string; type: string }): Promise<TargetKind | null> {
  if (model.type === 'directory') {
    return classifyDir(contents, model.path);
  }
  return isVolumeFile(model.name) ? 'volume' : null;
}

async function defaultKernel(app: JupyterFrontEnd): Promise<IKernelSpecMeta | null> {
  const manager = app.serviceManager.kernelspecs;
  await manager.ready;
  const specs = manager.specs;
  if (!specs || !specs.default) {
    return null;
  }
  const spec = specs.kernelspecs[specs.default];
  return {
    name: specs.default,
    display_name: spec?.display_name ?? specs.default,
    language: spec?.language ?? 'python'
  };
}

/**
 * Create a new notebook next to ``target`` that opens it, open the notebook, start its kernel
 * and run the first cell. Returns the notebook path.
 */
async function openInNotebook(
  app: JupyterFrontEnd,
  docManager: IDocumentManager,
  target: string,
  options: { createDemo?: boolean; run?: boolean } = {}
): Promise<string> {
  const contents = app.serviceManager.contents;
  const dir = dirname(target);
  const taken = (await listDir(contents, dir)).map(i => i.name as string);
  const nbPath = join(dir, freeNotebookName(target, taken));
  const kernel = await defaultKernel(app);
  await contents.save(nbPath, {
    type: 'notebook',
    format: 'json',
    content: annotatorNotebook(basename(target), kernel, !!options.createDemo)
  });
  const widget = docManager.openOrReveal(nbPath, 'default', kernel ? { name: kernel.name } : undefined);
  if (widget && widget instanceof NotebookPanel && options.run !== false) {
    await widget.context.ready;
    await widget.sessionContext.ready;
    if (widget.sessionContext.session?.kernel) {
      widget.content.activeCellIndex = 0;
      await NotebookActions.runAll(widget.content, widget.sessionContext);
    }
  }
  return nbPath;
}

async function launcherCandidates(contents: Contents, cwd: string): Promise<string[]> {
  const items = await listDir(contents, cwd);
  const volumes: string[] = [];
  const dirs: any[] = [];
  for (const item of items) {
    if (item.type === 'directory') {
      if (isZarrDir(item.name)) {
        volumes.push(item.name);
      } else {
        dirs.push(item);
      }
    } else if (isVolumeFile(item.name)) {
      volumes.push(item.name);
    }
  }
  // Projects first: one cheap metadata request per sub-directory (at most 50).
  const checks = await Promise.all(
    dirs.slice(0, 50).map(async d => ((await exists(contents, join(d.path, PROJECT_FILE))) ? d.name : null))
  );
  const projects = checks.filter((n): n is string => n !== null);
  const out = [...projects.sort(), ...volumes.sort()];
  if (!out.includes(DEMO_PROJECT)) {
    out.push(DEMO_PROJECT);
  }
  return out;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'al-annotator:plugin',
  description: 'Open volumes and annotation projects in the al_annotator notebook widget.',
  autoStart: true,
  requires: [IDocumentManager, IFileBrowserFactory],
  optional: [ILauncher, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager,
    browserFactory: IFileBrowserFactory,
    launcher: ILauncher | null,
    palette: ICommandPalette | null
  ) => {
    const { commands } = app;
    const contents = app.serviceManager.contents;

    const report = (err: unknown) => {
      console.error('al-annotator:', err);
      void showErrorMessage('AL Annotator', String((err as any)?.message ?? err));
    };

    const selected = () => {
      const browser = browserFactory.tracker.currentWidget;
      if (!browser) {
        return null;
      }
      const first = browser.selectedItems().next();
      return first && !first.done ? first.value : null;
    };

    commands.addCommand(CommandIDs.openPath, {
      label: 'Open a path in AL Annotator',
      icon: annotatorIcon,
      execute: async args => {
        const path = String(args.path ?? '');
        try {
          return await openInNotebook(app, docManager, path, { createDemo: !!args.createDemo, run: args.run !== false });
        } catch (err) {
          report(err);
          return null;
        }
      }
    });

    commands.addCommand(CommandIDs.openSelected, {
      label: 'Open in AL Annotator',
      caption: 'Open this volume or project in a new al_annotator notebook',
      icon: annotatorIcon,
      isVisible: () => {
        const item = selected();
        if (!item) {
          return false;
        }
        // Any directory may be a project, a zarr volume or a slice / DICOM folder: checked on click.
        return item.type === 'directory' || isVolumeFile(item.name);
      },
      execute: async () => {
        const item = selected();
        if (!item) {
          return null;
        }
        try {
          const kind = await classify(contents, item);
          if (kind === null) {
            await showErrorMessage(
              'AL Annotator',
              `"${item.name}" is not something al_annotator opens: pick a volume (.tif, .tiff, .h5, .hdf5, .nxs, ` +
                '.nii, .nii.gz, .npy, a .zarr directory or a folder of TIFF/PNG/DICOM slices) or a project ' +
                `directory (one containing ${PROJECT_FILE}).`
            );
            return null;
          }
          return await openInNotebook(app, docManager, item.path);
        } catch (err) {
          report(err);
          return null;
        }
      }
    });

    commands.addCommand(CommandIDs.launch, {
      label: args => (args.isPalette ? 'New AL Annotator notebook…' : 'AL Annotator'),
      caption: 'Annotate a 3D volume with active learning in a new notebook',
      icon: annotatorIcon,
      execute: async args => {
        const browser = browserFactory.tracker.currentWidget;
        const cwd = typeof args.cwd === 'string' ? args.cwd : browser?.model.path ?? '';
        try {
          // Launched from inside a project directory: open that project.
          if (cwd && (await classifyDir(contents, cwd)) === 'project') {
            return await openInNotebook(app, docManager, cwd);
          }
          const items = await launcherCandidates(contents, cwd);
          const result = await InputDialog.getItem({
            title: 'Open in AL Annotator',
            label: `Volume or project in /${cwd} (or type a path relative to it; ${DEMO_PROJECT} creates the bundled demo scan)`,
            items,
            current: 0,
            editable: true,
            okLabel: 'Open'
          });
          const value = (result.value ?? '').trim().replace(/\/+$/, '');
          if (!result.button.accept || !value) {
            return null;
          }
          const target = value.startsWith('/') ? join(value) : join(cwd, value);
          const model = await exists(contents, target);
          if (model === null) {
            if (basename(target) === DEMO_PROJECT) {
              return await openInNotebook(app, docManager, target, { createDemo: true });
            }
            await showErrorMessage('AL Annotator', `There is no "${target}" on the server.`);
            return null;
          }
          if ((await classify(contents, model)) === null) {
            await showErrorMessage('AL Annotator', `"${target}" is neither a volume al_annotator reads nor a project directory.`);
            return null;
          }
          return await openInNotebook(app, docManager, target);
        } catch (err) {
          report(err);
          return null;
        }
      }
    });

    app.contextMenu.addItem({
      command: CommandIDs.openSelected,
      selector: '.jp-DirListing-item[data-isdir]',
      rank: 3
    });

    if (launcher) {
      launcher.add({ command: CommandIDs.launch, category: 'Annotation', rank: 0 });
    }
    if (palette) {
      palette.addItem({ command: CommandIDs.launch, category: 'AL Annotator', args: { isPalette: true } });
    }
  }
};

export default plugin;
