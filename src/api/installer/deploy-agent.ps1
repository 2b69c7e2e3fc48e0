# kanade-agent setup for Windows, run elevated from the unpacked installer.
# Written for kanade-backend, columnar edition. Places the binary and the
# configuration, stores the broker credentials and the command keyring in
# HKLM\SOFTWARE\kanade\agent (administrators and SYSTEM only), registers
# and starts the service, then checks the connection. Each step's name is
# appended to .\install-stage.
param(
    [string]$SourceDir = $PSScriptRoot,
    [string]$ServiceName = 'kanade-agent',
    [switch]$ForceConfig,
    [switch]$Recreate,
    [switch]$NoStart,
    [string]$NatsToken,
    [string]$NatsUser,
    [string]$NatsPassword,
    [string]$CommandKeys,
    [switch]$RequireSignedCommands
)
$ErrorActionPreference = 'Stop'
$stageFile = Join-Path $SourceDir 'install-stage'
function Set-Stage([string]$Name) { Add-Content -LiteralPath $stageFile -Value $Name }

Set-Stage 'placement'
$programDir = Join-Path $env:ProgramFiles 'Kanade'
$dataRoot = Join-Path $env:ProgramData 'Kanade'
foreach ($d in @($programDir, (Join-Path $dataRoot 'config'), (Join-Path $dataRoot 'data'), (Join-Path $dataRoot 'logs'))) {
    New-Item -ItemType Directory -Force -Path $d | Out-Null
}
$existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($existing -and $existing.Status -ne 'Stopped') { Stop-Service -Name $ServiceName -Force }
$exe = Join-Path $programDir 'kanade-agent.exe'
Copy-Item -LiteralPath (Join-Path $SourceDir 'kanade-agent.exe') -Destination $exe -Force
$config = Join-Path $dataRoot 'config\agent.toml'
if ($ForceConfig -or -not (Test-Path -LiteralPath $config)) {
    Copy-Item -LiteralPath (Join-Path $SourceDir 'agent.toml') -Destination $config -Force
}
$reg = 'HKLM:\SOFTWARE\kanade\agent'
New-Item -Path $reg -Force | Out-Null
$acl = New-Object System.Security.AccessControl.RegistrySecurity
$acl.SetAccessRuleProtection($true, $false)
foreach ($who in @('S-1-5-18', 'S-1-5-32-544')) {
    $sid = New-Object System.Security.Principal.SecurityIdentifier($who)
    $rule = New-Object System.Security.AccessControl.RegistryAccessRule($sid, 'FullControl', 'ContainerInherit', 'None', 'Allow')
    $acl.AddAccessRule($rule)
}
Set-Acl -Path $reg -AclObject $acl
if ($NatsToken) { Set-ItemProperty -Path $reg -Name 'NatsToken' -Value $NatsToken }
if ($NatsUser -and $NatsPassword) {
    Set-ItemProperty -Path $reg -Name 'NatsUser' -Value $NatsUser
    Set-ItemProperty -Path $reg -Name 'NatsPassword' -Value $NatsPassword
}
if ($CommandKeys) { Set-ItemProperty -Path $reg -Name 'CommandKeys' -Value $CommandKeys }
if ($RequireSignedCommands) { Set-ItemProperty -Path $reg -Name 'RequireSignedCommands' -Value '1' }

Set-Stage 'service_start'
if ($existing -and $Recreate) {
    & sc.exe delete $ServiceName | Out-Null
    $existing = $null
}
if (-not $existing) {
    New-Service -Name $ServiceName -BinaryPathName "`"$exe`" --config `"$config`"" -DisplayName 'kanade agent' -StartupType Automatic | Out-Null
    & sc.exe failure $ServiceName reset= 86400 actions= restart/5000/restart/5000/restart/5000 | Out-Null
}
if (-not $NoStart) { Start-Service -Name $ServiceName }

Set-Stage 'connection_check'
& $exe --check-connection --config $config
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Host 'kanade-agent installed and connected.'
exit 0
