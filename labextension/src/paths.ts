/**
 * Pure helpers (no JupyterLab imports): what the annotator can open, notebook names and content.
 *
 * Paths are Jupyter contents paths: relative to the server root, '/'-separated, no leading '/'.
 */

/** File suffixes of volumes al_annotator imports (lower case; longest first). */
export const VOLUME_SUFFIXES = [
  '.ome.tiff',
  '.ome.tif',
  '.nii.gz',
  '.tiff',
  '.tif',
  '.hdf5',
  '.h5',
  '.nxs',
  '.nii',
  '.npy'
];

/** Directory suffixes that are volumes in themselves (OME-Zarr / zarr). */
export const VOLUME_DIR_SUFFIXES = ['.ome.zarr', '.zarr'];

/** Files whose presence makes a plain directory a slice stack / DICOM series. */
export const SLICE_SUFFIXES = ['.tif', '.tiff', '.png', '.dcm'];

/** The project directory name the bundled demo scan is created under. */
export const DEMO_PROJECT = 'al_annotator_demo';

/** The file that marks a project directory. */
export const PROJECT_FILE = 'project.json';

function matchSuffix(name: string, suffixes: string[]): string | null {
  const lower = name.toLowerCase();
  for (const s of suffixes) {
    if (lower.endsWith(s) && lower.length > s.length) {
      return s;
    }
  }
  return null;
}

/** Whether a file name is a volume file al_annotator reads. */
export function isVolumeFile(name: string): boolean {
  return matchSuffix(name, VOLUME_SUFFIXES) !== null;
}

/** Whether a directory name is a zarr / OME-Zarr volume. */
export function isZarrDir(name: string): boolean {
  return matchSuffix(name, VOLUME_DIR_SUFFIXES) !== null;
}

/** Whether a file name is a 2D slice of a slice stack or a DICOM series. */
export function isSliceFile(name: string): boolean {
  return matchSuffix(name, SLICE_SUFFIXES) !== null;
}

/** The last component of a path. */
export function basename(path: string): string {
  const parts = path.split('/').filter(p => p.length > 0);
  return parts.length ? parts[parts.length - 1] : '';
}

/** The directory of a path ('' for the server root). */
export function dirname(path: string): string {
  const parts = path.split('/').filter(p => p.length > 0);
  parts.pop();
  return parts.join('/');
}

/** Join contents paths. */
export function join(...parts: string[]): string {
  return parts
    .map(p => p.replace(/^\/+|\/+$/g, ''))
    .filter(p => p.length > 0)
    .join('/');
}

/** The name without a volume suffix: 'scan.nii.gz' -> 'scan', 'proj' -> 'proj'. */
export function stem(name: string): string {
  const s = matchSuffix(name, [...VOLUME_SUFFIXES, ...VOLUME_DIR_SUFFIXES]);
  const base = s ? name.slice(0, name.length - s.length) : name;
  return base.length ? base : name;
}

/**
 * A notebook name next to the target that is not taken: '<stem>_annotator.ipynb', else
 * '<stem>_annotator-1.ipynb', '-2', ...
 */
export function freeNotebookName(target: string, taken: Iterable<string>): string {
  const names = new Set(taken);
  const base = `${stem(basename(target))}_annotator`;
  let name = `${base}.ipynb`;
  for (let i = 1; names.has(name); i++) {
    name = `${base}-${i}.ipynb`;
  }
  return name;
}

/** A Python string literal for a path (JSON string syntax is valid Python). */
export function pyString(text: string): string {
  return JSON.stringify(text);
}

/** The first cell's source: open ``relPath`` (relative to the notebook's directory). */
export function annotatorSource(relPath: string, createDemo = false): string {
  const lines = ['from al_annotator import Annotator'];
  if (createDemo) {
    lines.push('from al_annotator.datasets import create_demo_project');
    lines.push('');
    lines.push(
      `create_demo_project(${pyString(relPath)}).close()  # a real micro-CT scan of bone (qim3d, MIT); reused if it exists`
    );
  }
  lines.push(`Annotator(${pyString(relPath)})`);
  return lines.join('\n');
}

const HELP = [
  '**The loop.** Paint strokes on a slice (any axis) with the class brushes; **commit** the slice when it is done.',
  'Start the **trainer** (a separate process; it may run on a SLURM GPU node sharing this directory):',
  'it trains a round for every committed slice and scores every slice. The **suggestions** list the slices',
  'worth annotating next, each with its reason and the model version that scored it.',
  '',
  'From a terminal: `al-annotator info PROJECT`, `al-annotator train PROJECT --watch`, `al-annotator suggest PROJECT`.'
].join('\n');

/** Notebook kernelspec metadata. */
export interface IKernelSpecMeta {
  name: string;
  display_name: string;
  language?: string;
}

/** nbformat 4 content of a new annotator notebook. */
export function annotatorNotebook(
  relPath: string,
  kernelspec: IKernelSpecMeta | null,
  createDemo = false
): any {
  const metadata: any = {
    language_info: { name: 'python' },
    al_annotator: { target: relPath, created_by: 'al-annotator labextension' }
  };
  if (kernelspec) {
    metadata.kernelspec = { language: 'python', ...kernelspec };
  }
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata,
    cells: [
      {
        cell_type: 'code',
        id: 'al-annotator-open',
        metadata: {},
        execution_count: null,
        outputs: [],
        source: annotatorSource(relPath, createDemo)
      },
      {
        cell_type: 'markdown',
        id: 'al-annotator-help',
        metadata: {},
        source: HELP
      }
    ]
  };
}
